"""The ``tgrpo`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from tgrpo.envs.suites import SUITES
from tgrpo.errors import StopRequested, TgrpoError, choice_error
from tgrpo.plotting import pyplot
from tgrpo.policy.config import VISION_ENCODERS


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
    """``"all"`` -> () (every init state), else ``"0-4,9"`` -> (0, 1, 2, 3, 4, 9)."""
    from tgrpo.config import parse_index_list

    return parse_index_list(text, "init-state list") if text != "all" else ()


def cmd_sft(args: argparse.Namespace) -> int:
    from tgrpo.policy.config import PolicyConfig
    from tgrpo.sft import SFTConfig, train_sft

    policy = PolicyConfig(cameras=tuple(args.cameras) if args.cameras else None, image_size=args.image_size,
                          seed=args.seed, checkpoint=args.init_checkpoint, vision=args.vision,
                          proprio=False if args.no_proprio else None)
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

    suites = list(SUITES) if args.suite == ["all"] else args.suite
    for suite in suites:
        if suite not in SUITES:
            raise choice_error("LIBERO suite", suite, ["all", *SUITES])
    names = [t for t in args.tasks if t != "all" and not str(t).isdigit()]
    if len(suites) > 1 and names:  # a task name belongs to one suite; indices mean the same task number in each
        raise TgrpoError(f"--tasks {','.join(names)}: with several suites give task indices (e.g. '0' or '0-4', "
                         "applied to every suite) or 'all'")
    from tgrpo.envs.libero_env import resolve_task

    # every suite's tasks checked before the policy loads or any episode runs
    tasks = {suite: tuple(resolve_task(suite, t) for t in _expand_tasks(suite, args.tasks)) for suite in suites}
    policy = load_policy(args.checkpoint)
    summaries = {}
    for suite in suites:  # several suites: one results directory each, and the paper's table over them
        out = args.out if len(suites) == 1 else str(Path(args.out) / suite)
        cfg = EvalConfig(suite=suite, tasks=tasks[suite], init_states=_int_list(args.init_states),
                         num_envs=args.num_envs, max_steps=args.max_steps, temperature=args.temperature,
                         videos=args.videos, out=out, checkpoint=str(args.checkpoint))
        summaries[suite] = evaluate(policy, cfg)
        print(markdown_table(summaries[suite]))
    if len(suites) > 1:
        from tgrpo.experiment import paper_table

        table = paper_table({args.checkpoint: {s: [r["success_rate"]] for s, r in summaries.items()}})
        Path(args.out, "results.md").write_text(table + "\n" + "\n".join(map(markdown_table, summaries.values())))
        print(table)
    print(f"results: {args.out}/results.md" + ("" if len(suites) > 1 else f", {args.out}/results.json"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tgrpo.evaluation import paired_comparison, read_episodes, wilson_interval

    base = read_episodes(args.baseline)
    print(f"paired by (task, init state) against {args.baseline}")
    print("| evaluation | episodes | success | 95% CI | both | only baseline | only this | McNemar p |")
    print("|---|---|---|---|---|---|---|---|")
    for other in args.others:
        c = paired_comparison(base, read_episodes(other))
        lo, hi = wilson_interval(c.b_successes, c.episodes)
        print(f"| {other} | {c.episodes} | {c.b_successes}/{c.episodes} (baseline {c.a_successes}) | "
              f"{100 * lo:.0f}-{100 * hi:.0f}% | {c.both} | {c.only_a} | {c.only_b} | {c.p_value:.3f} |")
        for label, states in (("only baseline", c.only_a_states), ("only this", c.only_b_states)):
            if states:
                print(f"    {label}: " + ", ".join(f"task {t} state {i}" for t, i in states))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from tgrpo.config import apply_overrides, train_config_from_dict
    from tgrpo.errors import ConfigError
    from tgrpo.train import train

    data: dict = {}
    if args.config:
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config file {args.config}: {exc}") from None
    flags = {"suite": args.suite, "task": args.task, "demos": args.demos, "out": args.out,
             "iterations": args.iterations, "seed": args.seed}
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.checkpoint:
        data.setdefault("policy", {})["checkpoint"] = args.checkpoint
    cfg = train_config_from_dict(apply_overrides(data, args.overrides))
    summary = train(cfg, resume=not args.no_resume)
    for e in summary["evals"]:
        print(f"iteration {e['iteration']:4d}: held-out success {e['successes']}/{e['episodes']} "
              f"({100 * e['success_rate']:.1f}%)")
    print(f"run directory: {cfg.out} (checkpoint/, tb/, eval/, summary.json)")
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    import numpy as np

    from tgrpo.data.hdf5 import load_task_demos
    from tgrpo.envs.config import EnvConfig
    from tgrpo.envs.libero_env import LiberoEnv
    from tgrpo.reward import Keyposes, RewardConfig, StageEvaluator, StageRewardParams, dense_rewards, task_stages
    from tgrpo.reward.keyposes import extract_keyposes, replay

    cfg = RewardConfig(source=args.source, spec_file=args.spec_file)
    with LiberoEnv(EnvConfig(suite=args.suite, task=args.task, cameras=())) as env:
        task = env.task
        stages = task_stages(task, cfg)
        print(f"{task.suite} task {task.task_id}: {task.language}")
        print(f"goal: {' and '.join('(' + ' '.join(p) + ')' for p in task.goal_predicates)}")
        print(f"stages ({cfg.source}):")
        for i, st in enumerate(stages):
            print(f"  {i}: {st.describe()}")
        keyposes, demo = Keyposes(), None
        if args.demos:
            path, demos = load_task_demos(args.demos, task, cfg.keypose_demos)
            keyposes, demo = extract_keyposes(demos, env, stages), demos[0]
            print(f"keyposes (mean end-effector offset from the anchor, m; from {path}):")
        else:
            print("keyposes: defaults (no --demos)")
        for kind in ("grasp", "release", "contact"):
            for name, v in getattr(keyposes, kind).items():
                n = keyposes.demos.get(f"{kind}:{name}", 0)
                print(f"  {kind:8s} {name}: {np.round(v, 3).tolist()} ({n} demos)")
        if args.plot:
            if demo is None:
                raise TgrpoError("--plot needs --demos (the reward is plotted along the first demo)")
            states, scene = replay(demo, env)
            evaluator = StageEvaluator(task, stages, keyposes, StageRewardParams(cfg.sigma, cfg.shaping_weight))
            r = dense_rewards(evaluator, states, np.ones((1, len(demo) - 1), bool), [scene])
            plt = pyplot()

            fig, ax = plt.subplots(figsize=(8, 4))
            for name, values in (("R = f1 + f2", r.rewards), ("f1 (stage)", r.f1), ("f2 (shaping)", r.f2)):
                ax.plot(values[0], label=name)
            ax2 = ax.twinx()
            ax2.step(range(len(r.stage[0])), r.stage[0], color="gray", alpha=0.4, where="post")
            ax2.set_ylabel("stage reached")
            ax.set_xlabel("step")
            ax.set_title(f"{task.suite} task {task.task_id}: dense reward along demo 0")
            ax.legend(loc="upper left")
            fig.tight_layout()
            fig.savefig(args.plot, dpi=100)
            print(f"plot: {args.plot} (final stage {int(r.stage[0, -1])}/{len(stages)}, return {r.rewards.sum():.1f})")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from tgrpo.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig(suite=args.suite, task=args.task, out=args.out, num_demos=args.num_demos,
                         sft_steps=args.sft_steps, iterations=args.iterations, eval_every=args.eval_every,
                         eval_init_states=args.eval_init_states or tuple(range(50)), seed=args.seed, train_overrides=tuple(args.overrides))
    run_pipeline(cfg)
    print(f"report: {args.out}/report.md, {args.out}/learning_curve.png")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from tgrpo.experiment import ExperimentConfig, grid_subset, report, run_experiment, time_left

    cfg = ExperimentConfig.load(args.config)
    tasks = grid_subset(args.tasks, "--tasks", cfg.tasks) if args.tasks else None
    if args.dry_run:
        runs = cfg.runs(tasks)
        for run in runs:
            state = "recorded" if cfg.recorded(run) else "done" if cfg.evaluated(run) else "todo"
            print(f"{state:8s}  {run.method:24s} {run.suite} task {run.task} seed {run.seed}  {run.path}")
        print(f"{sum(map(cfg.done, runs))}/{len(runs)} runs done" +
              (f" ({sum(cfg.recorded(r) is not None for r in runs)} recorded in the ledger {cfg.ledger})"
               if cfg.ledger else ""))
        left, sft_s, train_s = time_left(cfg, runs)
        if left:
            means = [f"{label} {s / 60:.0f} min" for label, s in (("SFT evaluation", sft_s), ("training run", train_s)) if s]
            print(f"about {left / 3600:.1f} h left at the finished cells' mean wall time ({', '.join(means)}), plus "
                  "the demos and SFT models still to make")
        return 0
    summary = report(cfg) if args.report else run_experiment(cfg, tasks, supersede=args.supersede)
    print((Path(cfg.out) / "results.md").read_text())
    print(f"{summary['finished']}/{summary['total']} runs finished; results: {cfg.out}/results.md, results.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tgrpo", description="TGRPO: online RL fine-tuning of VLA policies on LIBERO")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pipeline", help="the main job: demos -> SFT -> TGRPO -> evaluation -> report, on one task")
    p.add_argument("--suite", default="libero_object", choices=list(SUITES))
    p.add_argument("--task", default="0", help="task index or name")
    p.add_argument("--out", default="runs/pipeline")
    p.add_argument("--num-demos", type=int, default=25, help="scripted-expert demos to collect")
    p.add_argument("--sft-steps", type=int, default=600, help="behaviour-cloning steps of batch 32")
    p.add_argument("--iterations", type=int, default=8, help="TGRPO iterations (groups)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="TGRPO iterations between evaluations (default: before and after only)")
    p.add_argument("--eval-init-states", type=_int_list, default=tuple(range(40, 50)),
                   help="held-out fixed init states of the before/after evaluation (default 40-49)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="TGRPO config overrides, as for `tgrpo train` (e.g. algo.lr=3e-5 rollout.group_size=8)")
    p.set_defaults(func=cmd_pipeline)

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
    p.add_argument("--cameras", nargs="+", default=None, help="cameras the policy sees (default: agentview wrist)")
    p.add_argument("--vision", default="efficientnet-lite0", choices=list(VISION_ENCODERS),
                   help="vision encoder: pretrained EfficientNet-Lite0 (frozen) or a SigLIP ViT from scratch")
    p.add_argument("--no-proprio", action="store_true", help="do not give the policy proprioception")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--init-checkpoint", default=None, help="fine-tune this checkpoint instead of a fresh model")
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("eval", help="success rate of a checkpoint with the LIBERO protocol")
    p.add_argument("--checkpoint", required=True, help="policy checkpoint directory")
    p.add_argument("--suite", nargs="+", default=["libero_object"], metavar="SUITE",
                   help=f"one or more of {', '.join(SUITES)}, or 'all' (then OUT/SUITE/ each and OUT/results.md laid "
                        "out like the paper's table)")
    p.add_argument("--tasks", type=_task_list, default=["all"],
                   help="'all', '0,2,5', '0-4' or task names; with several suites, indices taken in each suite")
    p.add_argument("--init-states", default="all", help="fixed init states: 'all' (50, the protocol), '0-9', '3,7'")
    p.add_argument("--num-envs", type=int, default=2, help="parallel environment processes")
    p.add_argument("--max-steps", type=int, default=None, help="default: the suite's protocol value")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (OpenVLA's LIBERO evaluation)")
    p.add_argument("--videos", type=int, default=0, help="MP4s of the first K episodes per task")
    p.add_argument("--out", default="runs/eval", help="results directory (resumes if episodes.jsonl exists)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="paired comparison of evaluations on the same init states (McNemar test)")
    p.add_argument("baseline", help="evaluation directory (with episodes.jsonl), e.g. of the SFT checkpoint; "
                   "A+B joins several (e.g. init states 0-19 and 20-49 evaluated separately)")
    p.add_argument("others", nargs="+", help="evaluation directories to compare with it, e.g. RUN/eval/iter_0040")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("train", help="TGRPO fine-tuning of an SFT checkpoint on one task",
                       description="Any config field can be set as KEY=VALUE, e.g. algo.a1=0.5 rollout.group_size=8 "
                                   "algo.advantage=grpo (see tgrpo/config.py for every field).")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--checkpoint", help="SFT checkpoint directory to start from (policy.checkpoint)")
    p.add_argument("--config", help="JSON file with a (partial) TrainConfig")
    p.add_argument("--suite", choices=list(SUITES))
    p.add_argument("--task", help="task index or name")
    p.add_argument("--demos", help="demo file/directory of the task (reward keyposes)")
    p.add_argument("--iterations", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default runs/tgrpo)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoint exists")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("experiment", help="run and aggregate a grid of methods x tasks x seeds (JSON config)",
                       description="Runs every unfinished cell of the grid declared in CONFIG (see "
                                   "tgrpo/experiment/ and configs/), then writes OUT/results.md and results.json.")
    p.add_argument("config", help="experiment JSON file")
    p.add_argument("--dry-run", action="store_true", help="list the runs and which are done; run nothing")
    p.add_argument("--report", action="store_true", help="only aggregate the runs already finished")
    p.add_argument("--tasks", nargs="+", metavar="SUITE:TASK",
                   help="run (or list) only the cells of these of the grid's tasks; the aggregate covers all")
    p.add_argument("--supersede", action="store_true",
                   help="when a remade SFT model or demo file differs from what the ledger's cells started from "
                        "(other code, another machine), move those records to superseded/ beside the ledger (kept) "
                        "and run those cells again, instead of refusing the cells that would start from it")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("reward", help="show a task's reward stages and keyposes; plot the reward along a demo")
    p.add_argument("--suite", default="libero_object", choices=list(SUITES))
    p.add_argument("--task", default="0", help="task index or name")
    p.add_argument("--source", default="bddl", help="stage source: bddl, file or llm")
    p.add_argument("--spec-file", default=None, help="JSON stage spec for --source file")
    p.add_argument("--demos", default=None, help="demo root (OUT of collect-demos) or an .hdf5 file")
    p.add_argument("--plot", default=None, help="PNG path: reward along the first demo")
    p.set_defaults(func=cmd_reward)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StopRequested as exc:
        print(f"tgrpo {args.command}: {exc}; the last complete checkpoint is kept, rerun the command to resume",
              file=sys.stderr)
        return 130
    except TgrpoError as exc:
        print(f"tgrpo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tgrpo {args.command}: interrupted; files already completed are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
