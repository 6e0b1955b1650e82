"""Training checkpoints: policy, optimizer, RNG and progress, in safetensors and JSON only (no pickle).

A checkpoint is a directory. It is written as ``<name>.tmp`` and swapped into place with renames, so a
run killed at any moment leaves either the previous or the new checkpoint complete, never a mix:

    out/checkpoint/            policy.json, policy.safetensors, tokenizer.json, dataset_statistics.json,
                               optimizer.safetensors, trainer_state.json
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tgrpo.errors import DatasetError, StopRequested

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into flat tensors (safetensors) and JSON-able hyper-parameters."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, float]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as JSON-able values."""
    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def save_checkpoint(directory: str | Path, write_policy: Callable[[Path], Any], optimizer: torch.optim.Optimizer | None,
                    trainer_state: dict[str, Any]) -> Path:
    """Atomically write a checkpoint directory.

    Args:
        directory: final path, e.g. ``runs/x/checkpoint``.
        write_policy: writes the policy files into the directory it is given (``policy.save``).
        optimizer: saved to ``optimizer.safetensors`` (+ its hyper-parameters in the JSON), or None.
        trainer_state: JSON-able progress (step, epoch, metrics, RNG states, ...).
    """
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    old = final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_policy(tmp)
    state = dict(trainer_state)
    if optimizer is not None:
        tensors, meta = optimizer_to_tensors(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        state["optimizer"] = meta
    (tmp / STATE_FILE).write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def machine() -> dict[str, Any]:
    """What a float result depends on besides code, data and seeds: the CPU model, the instruction set PyTorch's
    kernels dispatch to, the PyTorch version and its thread count. Two machines that differ here can train
    models that differ in the last bits from the same inputs (on 2026-12-08 a new AMD EPYC machine remade an SFT
    model with another fingerprint: docs/experiments.md, "The ledger"), so training summaries and ledger
    records keep it."""
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def fingerprint(directory: str | Path) -> str:
    """SHA-256 of what a checkpoint directory holds of the policy: every file but the optimizer's and the
    trainer state (progress; a training run's history holds wall times), by name. Equal fingerprints mean the
    same weights, configuration and normalisation statistics; a policy trained again on the same data with
    the same seed on the same kind of machine gets the same one (float arithmetic on other CPUs may differ in
    the last bits). Remembered per process while no file's inode, size or times change, so that a
    multi-gigabyte checkpoint is read once per grid, not twice per cell."""
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name not in (STATE_FILE, OPTIMIZER_FILE))
    if not files:
        raise DatasetError(f"{directory} holds no policy files to fingerprint")
    stats = ((p, p.stat()) for p in files)
    return _fingerprint(tuple((str(p), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for p, st in stats))


@functools.lru_cache(maxsize=64)
def _fingerprint(files: tuple[tuple[str, int, int, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, *_ in files:
        digest.update(Path(path).name.encode() + b"\0")
        file_digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                file_digest.update(block)
        digest.update(file_digest.digest())
    return digest.hexdigest()


def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint at ``directory``, or the previous one if a swap was interrupted."""
    final = Path(directory)
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / STATE_FILE).exists():
            return candidate
    return None


def load_trainer_state(directory: str | Path, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Read ``trainer_state.json`` (and restore ``optimizer`` from its tensors when given)."""
    directory = Path(directory)
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{directory / STATE_FILE} is missing or not JSON ({exc}); cannot resume") from None
    if optimizer is not None and "optimizer" in state:
        try:
            optimizer_from_tensors(optimizer, load_file(str(directory / OPTIMIZER_FILE)), state["optimizer"])
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise DatasetError(f"{directory / OPTIMIZER_FILE} does not fit this model's optimizer ({exc})") from None
    return state


class GracefulStop:
    """Turn SIGINT/SIGTERM into :class:`StopRequested`, deferred while a checkpoint is being written.

    Use as ``with GracefulStop() as stop:`` around a run and ``with stop.writing():`` around each write. A
    signal outside a write raises at once (the previous checkpoint is complete); inside a write it is held
    until the write has finished, then raised. The previous handlers are restored on exit. Outside the main
    thread (where Python cannot install handlers) this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._writing = False
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self._writing:
            self._pending = signum
            return
        raise StopRequested(f"stopped by {signal.Signals(signum).name}")

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise StopRequested(f"stopped by {signal.Signals(signum).name} (after finishing the checkpoint write)")
