#!/usr/bin/env bash
# Set up tgrpo on a fresh Debian machine: headless MuJoCo rendering (Mesa EGL + OSMesa), a Python virtual
# environment in .venv, and the package with its pinned dependencies. Idempotent: a second run is quick.
#   bash scripts/setup.sh            # runtime only
#   bash scripts/setup.sh --test     # also the test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
PY="${PYTHON:-python3}"

# 1. Debian packages for headless rendering (MuJoCo's EGL backend on Mesa llvmpipe, OSMesa as fallback).
deb_pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libglib2.0-0 ffmpeg)
missing=()
for p in "${deb_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Virtual environment. torch goes first with its exact pin so nothing resolves a CUDA build.
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.tgrpo-installed$extras"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "[setup] installing Python packages (first time: a few minutes, about 3 GB)"
  # (the filter drops pip's notes about local index folders some machines configure; errors still show)
  pip_quiet() {
    local log status=0
    log=$(mktemp)
    .venv/bin/pip install -q --disable-pip-version-check "$@" >"$log" 2>&1 || status=$?
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
    rm -f "$log"
    return "$status"
  }
  pip_quiet "torch==2.13.0"
  pip_quiet -e ".$extras"
  touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import torch, tgrpo; print("tgrpo", tgrpo.__version__, "torch", torch.__version__)')"
