"""Learning curves of several `tgrpo train` runs in one PNG, and a Markdown table of their group statistics and evaluations.

    .venv/bin/python bench/learning_curves.py --runs TGRPO=runs/tgrpo_t0 GRPO=runs/grpo_t0 \\
        --out docs/img/curves_task0.png --window 4

Reads each run's ``checkpoint/trainer_state.json`` (per-iteration history and evaluations). Curves are
running means over ``--window`` iterations, since one group is a few episodes from one initial state.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tgrpo.plotting import pyplot

PANELS = (("rollout/success_rate", "group success (sampled rollouts)"), ("reward/return_mean", "group mean return"),
          ("reward/max_stage", "max stage reached"), ("update/entropy", "token entropy on the group's steps"),
          ("update/kl", "KL to the SFT policy (k3)"))


def _load(run: str) -> dict:
    path = Path(run) / "checkpoint" / "trainer_state.json"
    if not path.exists():
        raise SystemExit(f"no trainer state at {path}: is {run} a `tgrpo train` run directory?")
    state = json.loads(path.read_text())
    state["group_size"] = json.loads((Path(run) / "train_config.json").read_text())["rollout"]["group_size"]
    return state


def _split_run(item: str) -> tuple[str, str]:
    """LABEL=RUN_DIR, where both sides may contain "=" (a label "G=8", a grid run ".../a1=0.7/..."): the split is at
    the first "=" whose right side is an existing directory."""
    parts = item.split("=")
    for i in range(1, len(parts)):
        label, run = "=".join(parts[:i]), "=".join(parts[i:])
        if Path(run).is_dir():
            return label, run
    raise SystemExit(f"--runs entry {item!r} must look like LABEL=RUN_DIR, with RUN_DIR an existing directory")


def _smooth(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return np.array([v[max(0, i - window + 1): i + 1].mean() for i in range(len(v))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="LABEL=RUN_DIR pairs")
    parser.add_argument("--out", required=True, help="PNG path")
    parser.add_argument("--window", type=int, default=4, help="running-mean window in iterations")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        label, run = _split_run(item)
        runs[label] = _load(run)

    plt = pyplot()

    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.6 * len(PANELS), 3.4))
    for label, state in runs.items():
        hist = state["history"]
        its = [h["iteration"] for h in hist]
        for ax, (key, name) in zip(axes, PANELS):
            ax.plot(its, _smooth([h[key] for h in hist], args.window), label=label)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("iteration")
    axes[-1].set_yscale("log")  # KL spans orders of magnitude (a first-update spike next to 1e-3)
    axes[0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}\n")
    print("| run | iterations | group success (all iterations) | groups with a success | mean max stage "
          "| mean KL | probe NLL start -> end | held-out evaluations |")
    print("|---|---|---|---|---|---|---|---|")
    for label, state in runs.items():
        hist = state["history"]
        n = state["group_size"]
        rates = [h["rollout/success_rate"] for h in hist]
        nll_start = state.get("probe_start", {}).get("probe/nll")  # absent in runs from before the probe
        nll_end = hist[-1].get("probe/nll") if hist else None
        probe_cell = f"{nll_start:.3f} -> {nll_end:.3f}" if nll_start is not None and nll_end is not None else "-"
        evals = ", ".join(f"it {e['iteration']}: {e['successes']}/{e['episodes']}" for e in state["evals"])
        print(f"| {label} | {len(hist)} | {np.mean(rates):.2f} ({sum(rates) * n:.0f} of {n * len(hist)} episodes) "
              f"| {sum(r > 0 for r in rates)} | {np.mean([h['reward/max_stage'] for h in hist]):.2f} "
              f"| {np.mean([h['update/kl'] for h in hist]):.3f} | {probe_cell} | {evals or '-'} |")


if __name__ == "__main__":
    main()
