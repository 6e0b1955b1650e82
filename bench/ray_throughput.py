"""Rollout throughput of the local and the Ray backends for 1, 2 and 4 environment workers (issue 7).

    .venv/bin/python bench/ray_throughput.py --checkpoint runs/sft_obj3/best --workers 1 2 4 --steps 60

For each backend and worker count W, on one task with the policy's cameras and resolution:

  (a) bare: the W workers stepped with uniformly random actions (the simulator's limit on this machine);
  (b) rollout: the policy sampling every step for all W envs in one batched call (``rollout_groups``, as
      ``tgrpo train`` runs it with ``group_size * groups_per_iteration = W``), ``all_done``, no early stop
      counted: env steps of the live envs per second.

The Ray backend starts a private local Ray instance (loopback), as ``rollout.backend=ray`` does without
``rollout.ray_address``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from tgrpo.envs import EnvConfig
from tgrpo.evaluation import FixedTemperature
from tgrpo.policy.config import PolicyConfig
from tgrpo.policy.registry import build_policy, load_policy
from tgrpo.rollout.backends import make_env_pool
from tgrpo.rollout.engine import rollout_groups


def measure(backend: str, workers: int, cfg: EnvConfig, policy, steps: int) -> tuple[float, float, float]:
    """(start-up seconds, bare env steps/s, rollout env steps/s) of one pool."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with make_env_pool(backend, cfg, workers) as pool:
        startup = time.perf_counter() - t0
        pool.reset([0] * workers)
        pool.step(rng.uniform(-1, 1, (workers, 7)))  # warm-up: the first render allocates buffers
        start = time.perf_counter()
        for _ in range(steps):
            pool.step(rng.uniform(-1, 1, (workers, 7)))
        bare = workers * steps / (time.perf_counter() - start)
        torch.set_num_threads(1)
        marks: list[tuple[float, int]] = []
        rollout_groups(pool, FixedTemperature(policy, 1.0), init_state=0, max_steps=steps, stop_rule="all_done",
                       on_step=lambda t, live: marks.append((time.perf_counter(), live)))
        rate = sum(live for _, live in marks[1:]) / (marks[-1][0] - marks[0][0])
    return startup, bare, rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="policy checkpoint (default: a freshly initialised tiny-vla)")
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--backends", nargs="+", default=["local", "ray"])
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()

    policy = load_policy(args.checkpoint) if args.checkpoint else build_policy(PolicyConfig())
    cfg = EnvConfig(suite=args.suite, task=args.task, cameras=policy.config.cameras, image_size=policy.config.image_size)
    print(f"{args.suite} task {args.task}, cameras {'+'.join(cfg.cameras)} at {cfg.image_size}px, {args.steps} steps, "
          f"{os.cpu_count()} CPUs, policy {args.checkpoint or 'tiny-vla (untrained)'}\n")
    print("| backend | workers | start-up (s) | (a) bare env steps/s | (b) rollout env steps/s | b/a |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends:
        for w in args.workers:
            startup, bare, rate = measure(backend, w, cfg, policy, args.steps)
            print(f"| {backend} | {w} | {startup:.1f} | {bare:.1f} | {rate:.1f} | {rate / bare:.2f} |", flush=True)


if __name__ == "__main__":
    main()
