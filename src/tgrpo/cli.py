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


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in _task_list(text)) if text != "all" else ()


def cmd_sft(args: argparse.Namespace) -> int:
    from tgrpo.policy.config import PolicyConfig
    from tgrpo.sft import SFTConfig, train_sft

    policy = PolicyConfig(cameras=tuple(args.cameras), image_size=args.image_size, seed=args.seed,
                          checkpoint=args.init_checkpoint)
    cfg = SFTConfig(data=tuple(args.data), out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    max_demos=args.max_demos, num_threads=args.num_threads, seed=args.seed, policy=policy)
    summary = train_sft(cfg, resume=not args.no_resume)
    print(f"trained {summary['steps']} steps on {summary['train_rows']} rows ({summary['val_rows']} validation) in "
          f"{summary['seconds']:.0f} s; best validation NLL {summary['best_val_nll']:.3f}")
    print(f"checkpoints: {args.out}/checkpoint (last), {args.out}/best (best validation)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tgrpo.evaluation import EvalConfig, evaluate, markdown_table
    from tgrpo.policy.registry import load_policy

    policy = load_policy(args.checkpoint)
    tasks = tuple(int(t) if str(t).isdigit() else t for t in _expand_tasks(args.suite, args.tasks))
    cfg = EvalConfig(suite=args.suite, tasks=tasks, init_states=_int_list(args.init_states), num_envs=args.num_envs,
                     max_steps=args.max_steps, temperature=args.temperature, videos=args.videos, out=args.out)
    summary = evaluate(policy, cfg)
    print(markdown_table(summary))
    print(f"results: {args.out}/results.json, {args.out}/results.md")
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

    p = sub.add_parser("sft", help="behaviour cloning of the VLA on LIBERO-format HDF5 demos")
    p.add_argument("--data", nargs="+", required=True, help="HDF5 files or directories of them")
    p.add_argument("--out", default="runs/sft", help="run directory (checkpoint/, best/, tb/)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-demos", type=int, default=None, help="use at most this many demos per file")
    p.add_argument("--cameras", nargs="+", default=["agentview"], help="cameras the policy sees")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--init-checkpoint", default=None, help="fine-tune this checkpoint instead of a fresh model")
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("eval", help="success rate of a checkpoint with the LIBERO protocol")
    p.add_argument("--checkpoint", required=True, help="policy checkpoint directory")
    p.add_argument("--suite", default="libero_object", choices=list(SUITES))
    p.add_argument("--tasks", type=_task_list, default=["all"], help="'all', '0,2,5', '0-4' or task names")
    p.add_argument("--init-states", default="all", help="fixed init states: 'all' (50, the protocol), '0-9', '3,7'")
    p.add_argument("--num-envs", type=int, default=2, help="parallel environment processes")
    p.add_argument("--max-steps", type=int, default=None, help="default: the suite's protocol value")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (OpenVLA's LIBERO evaluation)")
    p.add_argument("--videos", type=int, default=0, help="MP4s of the first K episodes per task")
    p.add_argument("--out", default="runs/eval", help="results directory (resumes if episodes.jsonl exists)")
    p.set_defaults(func=cmd_eval)
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
