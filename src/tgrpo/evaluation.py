"""Evaluation with the LIBERO protocol (``tgrpo eval``).

Each task is run from LIBERO's fixed initial states (default: all 50) with the suite's max steps after
10 settle steps; episodes are spread over ``num_envs`` worker processes (one init state per env).
Every finished episode is appended to ``episodes.jsonl`` at once, so an interrupted evaluation resumes
without redoing finished episodes. Results: ``results.json`` and ``results.md`` (per task, per suite,
with 95% Wilson intervals), optional MP4 videos.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from tgrpo.envs.config import EnvConfig
from tgrpo.envs.libero_env import resolve_task, task_names
from tgrpo.envs.suites import NUM_INIT_STATES, get_suite
from tgrpo.errors import ConfigError, range_error
from tgrpo.rollout.engine import rollout_group
from tgrpo.rollout.types import PolicyStep
from tgrpo.rollout.workers import EnvPool, with_worker_retries

EPISODES_FILE = "episodes.jsonl"


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate.

    Attributes:
        suite: LIBERO suite.
        tasks: task indices (empty: every task of the suite).
        init_states: fixed init-state indices per task (empty: all 50, the LIBERO protocol).
        num_envs: parallel environment processes.
        max_steps: step budget after settling; None is the suite's protocol value.
        temperature: action sampling temperature; 0 is greedy, as OpenVLA's LIBERO evaluation.
        videos: number of episodes per task saved as MP4 (the first ones evaluated).
        out: directory for episodes.jsonl, results.json, results.md and videos/.
        checkpoint: the checkpoint evaluated, when it has one; recorded in results.json (an experiment grid
            checks it before adopting the evaluation).
    """

    suite: str = "libero_object"
    tasks: tuple[int, ...] = ()
    init_states: tuple[int, ...] = ()
    num_envs: int = 2
    max_steps: int | None = None
    temperature: float = 0.0
    videos: int = 0
    out: str = "runs/eval"
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        get_suite(self.suite)
        if self.num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {self.num_envs}")
        for i in self.init_states:
            if not 0 <= i < NUM_INIT_STATES:
                raise range_error("init-state index", i, 0, NUM_INIT_STATES - 1)
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")


class FixedTemperature:
    """Adapts a policy to the rollout interface with a fixed sampling temperature."""

    def __init__(self, policy, temperature: float):
        self.policy, self.temperature = policy, temperature

    def reset(self, num_envs: int) -> None:
        self.policy.reset(num_envs)

    def act(self, observations, instruction: str, env_ids: np.ndarray) -> PolicyStep:
        return self.policy.act(observations, instruction, env_ids, temperature=self.temperature)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def write_video(path: Path, frames: np.ndarray, fps: int = 20) -> None:
    """(T, H, W, 3) uint8 LIBERO frames (upside down) -> MP4, upright."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(str(path), fps=fps, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame[::-1, ::-1]))


def _read_done(path: Path) -> dict[tuple[int, int], dict]:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                ep = json.loads(line)
                done[(ep["task"], ep["init_state"])] = ep
    return done


def summarize(episodes: list[dict], suite: str) -> dict:
    """Per-task and per-suite success with Wilson intervals."""
    names = task_names(suite)
    per_task = {}
    for task in sorted({e["task"] for e in episodes}):
        eps = [e for e in episodes if e["task"] == task]
        k = sum(e["success"] for e in eps)
        lo, hi = wilson_interval(k, len(eps))
        per_task[task] = {"name": names[task], "episodes": len(eps), "successes": k, "success_rate": k / len(eps),
                          "ci95": [lo, hi], "mean_steps_success": float(np.mean([e["steps"] for e in eps if e["success"]]))
                          if k else None}
    n = len(episodes)
    k = sum(e["success"] for e in episodes)
    return {"suite": suite, "episodes": n, "successes": k, "success_rate": k / n if n else 0.0,
            "ci95": list(wilson_interval(k, n)), "tasks": per_task}


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test: P(a split of the discordant pairs at least this uneven | no difference).

    Under the null each of the ``n = only_a + only_b`` discordant init states goes either way with
    probability 1/2, so the p-value is ``min(1, 2 * P(Binomial(n, 1/2) <= min(only_a, only_b)))``.
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def read_episodes(path: str | Path) -> dict[tuple[int, int], bool]:
    """``(task, init_state) -> success`` from an evaluation directory (or its episodes.jsonl).

    ``"A+B"`` joins several evaluations (e.g. init states 0-19 in one directory and 20-49 in another); an
    episode found in two of them with different outcomes is an error."""
    if "+" in str(path) and not Path(path).exists():
        merged: dict[tuple[int, int], bool] = {}
        for part in str(path).split("+"):
            for key, success in read_episodes(part).items():
                if merged.setdefault(key, success) != success:
                    raise ConfigError(f"task {key[0]} init state {key[1]} succeeds in one of {path} and fails "
                                      "in another; join evaluations of the same policy only")
        return merged
    path = Path(path)
    log = path / EPISODES_FILE if path.is_dir() else path
    if not log.exists():
        raise ConfigError(f"no evaluation episodes at {path} (expected a directory with {EPISODES_FILE}, "
                          f"written by `tgrpo eval` or a training run's eval/iter_NNNN)")
    return {key: bool(ep["success"]) for key, ep in _read_done(log).items()}


@dataclass(frozen=True)
class PairedComparison:
    """Two evaluations on the same (task, init state) episodes: who succeeds where."""

    episodes: int
    a_successes: int
    b_successes: int
    both: int
    only_a: int
    only_b: int
    p_value: float  # exact McNemar, two-sided
    only_a_states: tuple[tuple[int, int], ...]
    only_b_states: tuple[tuple[int, int], ...]


def paired_comparison(a: dict[tuple[int, int], bool], b: dict[tuple[int, int], bool]) -> PairedComparison:
    """Compare two evaluations episode by episode on the (task, init state) pairs both contain.

    Greedy LIBERO episodes are deterministic given the init state, so pairing by init state removes the
    layout-difficulty variance that two unpaired success rates carry.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ConfigError("the two evaluations share no (task, init state) episode; evaluate both on the same "
                          "--tasks and --init-states")
    only_a = tuple(k for k in common if a[k] and not b[k])
    only_b = tuple(k for k in common if b[k] and not a[k])
    return PairedComparison(
        episodes=len(common), a_successes=sum(a[k] for k in common), b_successes=sum(b[k] for k in common),
        both=sum(a[k] and b[k] for k in common), only_a=len(only_a), only_b=len(only_b),
        p_value=mcnemar_exact_p(len(only_a), len(only_b)), only_a_states=only_a, only_b_states=only_b)


def markdown_table(summary: dict) -> str:
    lines = ["| task | name | success | rate | 95% CI | mean steps (successes) |", "|---|---|---|---|---|---|"]
    for task, r in summary["tasks"].items():
        steps = f"{r['mean_steps_success']:.0f}" if r["mean_steps_success"] is not None else "-"
        lines.append(f"| {task} | {r['name']} | {r['successes']}/{r['episodes']} | {100 * r['success_rate']:.1f}% | "
                     f"{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}% | {steps} |")
    lines.append(f"| **all** | {summary['suite']} | {summary['successes']}/{summary['episodes']} | "
                 f"**{100 * summary['success_rate']:.1f}%** | {100 * summary['ci95'][0]:.0f}-{100 * summary['ci95'][1]:.0f}% | |")
    return "\n".join(lines) + "\n"


def evaluate(policy, cfg: EvalConfig, cameras: Sequence[str] | None = None, image_size: int | None = None,
             pool: EnvPool | None = None) -> dict:
    """Evaluate ``policy`` (the rollout interface with an ``act(..., temperature=)``) under ``cfg``.

    ``cameras``/``image_size`` default to the policy's own (``policy.config``); the env renders only those.
    ``pool``: reuse these running workers (all of one task, e.g. the training pool) instead of starting new ones.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cameras = tuple(cameras or policy.config.cameras)
    image_size = image_size or policy.config.image_size
    tasks = [resolve_task(cfg.suite, t) for t in cfg.tasks] or list(range(len(task_names(cfg.suite))))
    init_states = list(cfg.init_states) or list(range(NUM_INIT_STATES))
    log = out / EPISODES_FILE
    done = _read_done(log)
    todo = [(t, i) for t in tasks for i in init_states if (t, i) not in done]
    if done:
        print(f"resuming evaluation: {len(done)} episodes already in {log}, {len(todo)} to go", file=sys.stderr)
    actor = FixedTemperature(policy, cfg.temperature)
    torch.set_num_threads(1)  # the env workers use the other cores; an oversubscribed torch is 60x slower
    bar = tqdm(total=len(todo), desc=f"eval {cfg.suite}", unit="ep", file=sys.stderr)
    t0 = time.perf_counter()
    for task in tasks:
        pending = [i for t, i in todo if t == task]
        if not pending:
            continue
        videos_left = max(0, cfg.videos - sum(1 for (t, _), e in done.items() if t == task))
        if pool is not None and pool.task.task_id == task:
            workers = contextlib.nullcontext(pool)
        else:
            env_cfg = EnvConfig(suite=cfg.suite, task=task, cameras=cameras, image_size=image_size)
            workers = EnvPool(env_cfg, num_envs=min(cfg.num_envs, len(pending)))
        with workers as live:
            n = live.num_envs
            for start in range(0, len(pending), n):
                chunk = pending[start:start + n]
                chunk = chunk + [chunk[-1]] * (n - len(chunk))  # pad the last chunk; duplicates are dropped
                r, _ = with_worker_retries(  # a dead or hung worker is replaced and these episodes rerun
                    live, lambda: rollout_group(live, actor, init_state=chunk, max_steps=cfg.max_steps,
                                                stop_rule="all_done", record_images=videos_left > 0),
                    what="evaluation rollout", hint=f"Finished episodes are kept in {log}; rerun to continue.")
                with log.open("a") as fh:
                    for row, init in enumerate(chunk):
                        if (task, init) in done:  # padding duplicate
                            continue
                        ep = {"task": task, "init_state": init, "success": bool(r.success[row]),
                              "steps": int(r.lengths[row])}
                        done[(task, init)] = ep
                        fh.write(json.dumps(ep) + "\n")
                        bar.update(1)
                        if videos_left > 0 and "agentview" in r.images:
                            write_video(out / "videos" / f"task{task}_init{init}_{'success' if ep['success'] else 'fail'}.mp4",
                                        r.images["agentview"][row, :ep["steps"]].numpy())
                            videos_left -= 1
                succ = sum(e["success"] for e in done.values() if e["task"] == task)
                bar.set_postfix(task=task, success=succ)
    bar.close()
    episodes = [done[(t, i)] for t in tasks for i in init_states]
    summary = summarize(episodes, cfg.suite)
    summary["config"] = asdict(cfg)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(markdown_table(summary))
    return summary
