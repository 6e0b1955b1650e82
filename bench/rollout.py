"""Rollout throughput against the simulator's limit, measured side by side in one run (issue 8).

    .venv/bin/python bench/rollout.py --checkpoint runs/sft_obj3/best --num-envs 4 --steps 100

On one task and one worker pool (the policy's cameras and resolution):

  (a) the bare simulator: N workers stepped with uniformly random actions, images and privileged state
      returned as in training: the limit;
  (b) the full TGRPO group rollout: the policy sampling every step (temperature 1.0, one torch thread, as
      ``tgrpo train`` runs it) and the dense stage rewards, with the group stepped as one batch or its two
      halves overlapped (``rollout.overlap``), and with the LoRA adapter run beside each layer or merged
      into its weights (``policy.merge_lora_sampling``): four rollouts;
  (c) the learner: samples (valid steps) per second of a TGRPO update on the group from (b), K epochs.

(a) runs before and after the rollouts; the ratio divides by their mean, so a drift of the machine's
speed during the run shows up as two different (a) rows instead of a biased ratio.

Prints a Markdown table with env steps/s and the ratio b/a. Each rollout runs up to ``--steps`` steps from
fixed init state 0 (``first_success``: a trained policy may end it early; the rate counts the steps run).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import torch

from tgrpo.config import AlgoConfig, RewardConfig, TrainConfig
from tgrpo.envs import EnvConfig
from tgrpo.evaluation import FixedTemperature
from tgrpo.policy.config import PolicyConfig
from tgrpo.policy.registry import build_policy, load_policy
from tgrpo.reward.dense import (
    Keyposes,
    StageEvaluator,
    StageRewardParams,
    dense_rewards,
)
from tgrpo.reward.sources import task_stages
from tgrpo.rollout import EnvPool, rollout_group
from tgrpo.train import flatten_group, group_advantages, update_policy


def bare(pool: EnvPool, steps: int, rng: np.random.Generator) -> float:
    """Env steps/s of the pool under random actions (all envs every step)."""
    n = pool.num_envs
    pool.reset([0] * n)
    pool.step(rng.uniform(-1, 1, (n, 7)))  # warm-up: the first render allocates buffers
    start = time.perf_counter()
    for _ in range(steps):
        pool.step(rng.uniform(-1, 1, (n, 7)))
    return n * steps / (time.perf_counter() - start)


def full(pool: EnvPool, policy, evaluator: StageEvaluator, steps: int, overlap: bool):
    """Env steps/s of a group rollout plus its dense rewards; returns (rate, group, rewards).

    Timed from the end of the first step (the reset and the first step's warm-up are left out, as in (a))
    to the end of the reward computation."""
    torch.set_num_threads(1)
    marks: list[tuple[float, int]] = []
    group = rollout_group(pool, FixedTemperature(policy, 1.0), init_state=0, max_steps=steps, overlap=overlap,
                          on_step=lambda t, live: marks.append((time.perf_counter(), live)))
    rewards = dense_rewards(evaluator, group.states, group.mask.numpy(), group.scenes)
    timed_steps = sum(live for _, live in marks[1:])
    return timed_steps / (time.perf_counter() - marks[0][0]), group, rewards


def learner(policy, group, rewards, threads: int) -> float:
    """Samples (valid steps x epochs) per second of one TGRPO update, including the frozen-encoder pass."""
    torch.set_num_threads(threads)
    algo = AlgoConfig()
    adv = group_advantages(group, rewards, algo)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=algo.lr)
    start = time.perf_counter()
    update_policy(policy, optimizer, flatten_group(group, adv, policy, group.task.language), algo,
                  np.random.default_rng(0))
    return algo.epochs * int(group.mask.sum()) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="policy checkpoint (default: a freshly initialised tiny-vla)")
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--learner-threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="weight dtype of the policy (PolicyConfig.dtype; float32 is the CPU default)")
    args = p.parse_args()

    policy = (load_policy(args.checkpoint, seed=args.seed, dtype=args.dtype) if args.checkpoint
              else build_policy(PolicyConfig(seed=args.seed, dtype=args.dtype)))
    lora = TrainConfig().policy  # train's default LoRA, so the learner updates what `tgrpo train` updates
    policy.enable_lora(lora.lora_rank, lora.lora_alpha)
    cams, size = policy.config.cameras, policy.config.image_size
    print(f"{args.suite} task {args.task}, N = {args.num_envs}, cameras {'+'.join(cams)} at {size}x{size}, "
          f"up to {args.steps} steps, {os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl')}, "
          f"policy {args.checkpoint or 'tiny-vla (untrained)'}, {args.dtype}\n")
    rng = np.random.default_rng(args.seed)
    with EnvPool(EnvConfig(suite=args.suite, task=args.task, cameras=cams, image_size=size), args.num_envs) as pool:
        task = pool.task
        evaluator = StageEvaluator(task, task_stages(task, RewardConfig()), Keyposes(), StageRewardParams())
        full(pool, policy, evaluator, 3, overlap=True)  # warm-up: worker buffers, the policy's first call
        before = bare(pool, args.steps, rng)
        rows = [("(a) bare simulator, random actions, before", before, "")]
        group = rewards = None
        for merge in (False, True):
            policy.config = dataclasses.replace(policy.config, merge_lora_sampling=merge)
            for overlap in (False, True):
                rate, group, rewards = full(pool, policy, evaluator, args.steps, overlap)
                rows.append((f"(b) group rollout + rewards, {'halves overlapped' if overlap else 'one batch'}, "
                             f"LoRA {'merged' if merge else 'unmerged'}", rate,
                             f"{int(group.mask.sum())} steps, {int(group.success.sum())} successes"))
        after = bare(pool, args.steps, rng)
        rows.append(("(a) bare simulator, random actions, after", after, ""))
    limit = (before + after) / 2
    samples = learner(policy, group, rewards, args.learner_threads)
    print("| measurement | env steps/s | ratio to mean (a) | notes |")
    print("|---|---|---|---|")
    for name, rate, note in rows:
        print(f"| {name} | {rate:.1f} | {rate / limit:.2f} | {note} |")
    print(f"\n(c) learner: {samples:.1f} samples/s (one TGRPO update, K = {AlgoConfig().epochs} epochs, "
          f"{args.learner_threads} torch threads, frozen-encoder pass included)")


if __name__ == "__main__":
    main()
