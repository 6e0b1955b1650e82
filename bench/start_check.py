"""Does this machine remake an experiment grid's start? Train a grid's SFT model again and compare fingerprints.

    .venv/bin/python bench/start_check.py configs/small_grid.json --suite libero_object --seed 0 [--demos]

Trains the SFT model of ``(suite, seed)`` exactly as ``tgrpo experiment`` does (``ExperimentConfig.sft_config``),
into ``--out``, from the grid's demos. With ``--demos`` it first collects the suite's demos of the grid again
into ``--out`` too, with the grid's settings, and trains on those. Prints the fingerprints
(``tgrpo.checkpoint.fingerprint``, ``DemoFile.fingerprint``) of what it made next to the grid's own (when
``out/`` still has them) and the start the grid's ledger recorded for those cells: equal ones mean that a
checkout without ``runs/`` continues the grid rather than having its cells refused (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from tgrpo.checkpoint import fingerprint
from tgrpo.data.collect import collect_task
from tgrpo.data.hdf5 import DemoFile, default_demo_path
from tgrpo.envs.libero_env import task_names
from tgrpo.experiment import ExperimentConfig
from tgrpo.sft import train_sft


def demo_print(path: Path) -> str | None:
    if not path.exists():
        return None
    with DemoFile(path) as f:
        return f.fingerprint()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="experiment JSON (its ledger holds the recorded starts)")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demos", action="store_true", help="collect the suite's demos again too, and train on those")
    ap.add_argument("--out", default=None, help="where to make them (default: a new temporary directory)")
    args = ap.parse_args()
    cfg = ExperimentConfig.load(args.config)
    out = Path(args.out or tempfile.mkdtemp(prefix="start_check_"))
    tasks = [t for s, t in cfg.tasks if s == args.suite]
    sft_cfg = cfg.sft_config(args.suite, args.seed, out / "sft")
    rows = []
    if args.demos:
        made = []
        for t in tasks:
            collect_task(args.suite, t, out / "demos", cfg.num_demos, num_envs=cfg.demo_envs)
            made.append(default_demo_path(out / "demos", args.suite, task_names(args.suite)[t]))
            rows.append((f"demos of task {t}", demo_print(made[-1]), demo_print(cfg.demo_path(args.suite, t)), "demos", t))
        sft_cfg = dataclasses.replace(sft_cfg, data=tuple(map(str, made)))
    train_sft(sft_cfg)
    grid_sft = cfg.sft_checkpoint(args.suite, args.seed)
    rows.append(("SFT model", fingerprint(out / "sft" / grid_sft.name),
                 fingerprint(grid_sft) if grid_sft.is_dir() else None, "sft", None))

    print(f"| {args.suite} seed {args.seed} | made again ({out}) | the grid's, in {cfg.out} | recorded in the ledger "
          "| all equal |")
    print("|---|---|---|---|---|")
    for label, again, grid, what, task in rows:
        recorded = sorted({rec["start"][what] for run in cfg.runs()
                           if run.suite == args.suite and (run.seed == args.seed if what == "sft" else run.task == task)
                           and (rec := cfg.recorded(run)) and rec.get("start", {}).get(what)})
        cells = [str(x)[:16] if x else "-" for x in (again, grid)] + [", ".join(r[:16] for r in recorded) or "-"]
        same = again is not None and all(x == again for x in [grid, *recorded] if x)
        print(f"| {label} | " + " | ".join(cells) + f" | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
