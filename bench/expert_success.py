"""Success rate of the scripted expert per LIBERO task, written as a Markdown table.

Runs ``ScriptedExpert`` without cameras on every task of the given suites, K episodes per task, from
seeded random placements (``env.reset(seed=s)``, the source of our demonstrations) or from LIBERO's fixed
initial states (``env.reset(init_state=i)``), and counts successes within each suite's max steps.

    .venv/bin/python bench/expert_success.py --suites libero_object libero_spatial --episodes 20 \\
        --init-source random --out docs/experts.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np

from tgrpo.envs import EnvConfig, LiberoEnv, SUITES, task_names
from tgrpo.experts import ScriptedExpert, supports


@dataclass
class TaskResult:
    """Outcome of the episodes of one task; ``steps`` holds the step counts of the successful ones."""

    suite: str
    task_id: int
    name: str
    supported: bool
    episodes: int = 0
    steps: list[int] | None = None
    seconds: float = 0.0

    @property
    def successes(self) -> int:
        return len(self.steps or [])


def run_episode(env: LiberoEnv, expert: ScriptedExpert, init_source: str, index: int) -> int | None:
    """One episode; returns the number of steps to success, or ``None`` on failure."""
    obs = env.reset(init_state=index) if init_source == "fixed" else env.reset(seed=index)
    expert.reset(env.scene_geometry())
    for step in range(1, env.task.max_steps + 1):
        obs = env.step(expert.act(obs.state))
        if obs.success:
            return step
    return None


def run_task(suite: str, task_id: int, episodes: int, init_source: str) -> TaskResult:
    """Run the expert on one task (one environment reused across episodes)."""
    start = time.time()
    with LiberoEnv(EnvConfig(suite=suite, task=task_id, cameras=())) as env:
        result = TaskResult(suite, task_id, env.task.name, supports(env.task))
        if not result.supported:
            return result
        expert = ScriptedExpert(env.task)
        steps = [run_episode(env, expert, init_source, i) for i in range(episodes)]
    result.episodes, result.steps = episodes, [s for s in steps if s is not None]
    result.seconds = time.time() - start
    return result


def markdown(results: list[TaskResult], command: str, init_source: str, episodes: int) -> str:
    """Per-task and per-suite tables."""
    source = "seeded random placements (seeds 0..K-1)" if init_source == "random" else "LIBERO's fixed init states 0..K-1"
    lines = [
        "# Scripted expert success",
        "",
        f"Episodes per task: {episodes}, from {source}; success within the suite's max steps, no cameras.",
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        "## Per suite",
        "",
        "| suite | tasks supported | successes | rate | mean steps of successes |",
        "|---|---|---|---|---|",
    ]
    for suite in dict.fromkeys(r.suite for r in results):
        rows = [r for r in results if r.suite == suite]
        done = [r for r in rows if r.supported]
        wins, total = sum(r.successes for r in done), sum(r.episodes for r in done)
        steps = [s for r in done for s in r.steps or []]
        lines.append(f"| {suite} | {len(done)}/{len(rows)} | {wins}/{total} | {_rate(wins, total)} | "
                     f"{_mean(steps)} |")
    lines += ["", "## Per task", "", "| suite | task | name | successes | rate | mean steps of successes |",
              "|---|---|---|---|---|---|"]
    for r in results:
        if r.supported:
            lines.append(f"| {r.suite} | {r.task_id} | {r.name} | {r.successes}/{r.episodes} | "
                         f"{_rate(r.successes, r.episodes)} | {_mean(r.steps or [])} |")
        else:
            lines.append(f"| {r.suite} | {r.task_id} | {r.name} | not supported | | |")
    return "\n".join(lines) + "\n"


def _rate(wins: int, total: int) -> str:
    return f"{100.0 * wins / total:.0f}%" if total else "-"


def _mean(steps: list[int]) -> str:
    return f"{np.mean(steps):.0f}" if steps else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES))
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task")
    parser.add_argument("--init-source", choices=("random", "fixed"), default="random")
    parser.add_argument("--tasks", type=int, nargs="*", help="task indices (default: all of each suite)")
    parser.add_argument("--out", default="docs/experts.md", help="Markdown file to write ('-' for stdout only)")
    args = parser.parse_args(argv)
    command = "python bench/expert_success.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = []
    for suite in args.suites:
        for task_id in args.tasks if args.tasks else range(len(task_names(suite))):
            result = run_task(suite, task_id, args.episodes, args.init_source)
            results.append(result)
            status = f"{result.successes}/{result.episodes}" if result.supported else "not supported"
            print(f"{suite} {task_id:2d} {status:>14} {result.seconds:6.1f}s {result.name}", flush=True)
    text = markdown(results, command, args.init_source, args.episodes)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
