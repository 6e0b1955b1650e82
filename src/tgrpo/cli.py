"""The ``tgrpo`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tgrpo.envs.suites import SUITES
from tgrpo.errors import TgrpoError


def _task_list(text: str) -> list[str]:
    """Parse ``"all"``, ``"0,3,5"`` or ``"0-4"`` into a list of task specifiers (validated later)."""
    if text == "all":
        return ["all"]
    out: list[str] = []
    for part in text.split(","):
        if "-" in part and part.replace("-", "").isdigit():
            lo, hi = part.split("-")
            out.extend(str(i) for i in range(int(lo), int(hi) + 1))
        elif part:
            out.append(part)
    return out


def _expand_tasks(suite: str, tasks: list[str]) -> list[str | int]:
    from tgrpo.envs.libero_env import task_names

    return list(range(len(task_names(suite)))) if tasks == ["all"] else list(tasks)


def cmd_tasks(args: argparse.Namespace) -> int:
    from tgrpo.envs.libero_env import task_names
    from tgrpo.envs.suites import get_suite

    for suite in args.suites or list(SUITES):
        spec = get_suite(suite)
        print(f"{suite} (max steps {spec.max_steps}):")
        for i, name in enumerate(task_names(suite)):
            print(f"  {i}: {name}")
    return 0


def cmd_collect_demos(args: argparse.Namespace) -> int:
    from tgrpo.data.collect import collect_task

    results = []
    for task in _expand_tasks(args.suite, args.tasks):
        r = collect_task(args.suite, task, args.out, args.num_demos, num_envs=args.num_envs,
                         image_size=args.image_size, seed=args.seed, overwrite=args.overwrite)
        results.append(r)
        if r.skipped:
            print(f"task {r.task_id} ({r.task_name}): {r.path} exists, kept (use --overwrite to replace)")
        else:
            print(f"task {r.task_id} ({r.task_name}): {r.demos} demos from {r.attempts} attempts, "
                  f"mean length {r.mean_length:.0f} steps -> {r.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tgrpo", description="TGRPO: online RL fine-tuning of VLA policies on LIBERO")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tasks", help="list the tasks of the LIBERO suites")
    p.add_argument("suites", nargs="*", choices=list(SUITES), help="suites to list (default: all four)")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("collect-demos", help="collect scripted-expert demos in LIBERO's HDF5 format")
    p.add_argument("--suite", default="libero_object", choices=list(SUITES))
    p.add_argument("--tasks", type=_task_list, default=["all"], help="'all', indices '0,2,5', a range '0-4', or task names")
    p.add_argument("--num-demos", type=int, default=50, help="successful demos per task (LIBERO ships 50)")
    p.add_argument("--num-envs", type=int, default=2, help="parallel environment processes")
    p.add_argument("--image-size", type=int, default=128, help="camera resolution (LIBERO's datasets: 128)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the random placements")
    p.add_argument("--out", default="data/demos", help="output root; files go to OUT/SUITE/TASK_demo.hdf5")
    p.add_argument("--overwrite", action="store_true", help="replace existing demo files")
    p.set_defaults(func=cmd_collect_demos)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TgrpoError as exc:
        print(f"tgrpo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tgrpo {args.command}: interrupted; files already completed are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
