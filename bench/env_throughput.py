"""Environment step throughput of the worker pool: cameras on/off, N parallel envs, random actions.

    .venv/bin/python bench/env_throughput.py --suite libero_object --num-envs 1 4 --steps 100

Prints a Markdown table of aggregate env steps/s (all N envs together) and ms per step per env.
Each configuration: build the pool, reset to init state 0 (untimed), then time ``--steps`` steps of
uniformly random actions on every env.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tgrpo.envs import EnvConfig
from tgrpo.rollout import EnvPool

CAMERA_SETS = {"none": (), "agentview+wrist": ("agentview", "wrist"), "agentview": ("agentview",)}


def measure(suite: str, task: int, cameras: tuple[str, ...], size: int, n: int, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    with EnvPool(EnvConfig(suite=suite, task=task, cameras=cameras, image_size=size), num_envs=n) as pool:
        pool.reset([0] * n)
        pool.step(rng.uniform(-1, 1, (n, 7)))  # warm-up (first render allocates buffers)
        start = time.perf_counter()
        for _ in range(steps):
            pool.step(rng.uniform(-1, 1, (n, 7)))
        return n * steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 4])
    p.add_argument("--cameras", nargs="+", default=["none", "agentview+wrist"], choices=list(CAMERA_SETS))
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"{args.suite} task {args.task}, {args.image_size}x{args.image_size}, {args.steps} steps per env, "
          f"{os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl')}\n")
    print("| cameras | N envs | env steps/s (all envs) | ms per step per env |")
    print("|---|---|---|---|")
    for cams in args.cameras:
        for n in args.num_envs:
            rate = measure(args.suite, args.task, CAMERA_SETS[cams], args.image_size, n, args.steps, args.seed)
            print(f"| {cams} | {n} | {rate:.1f} | {1000 * n / rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
