"""How far policies are from the demonstrations: the training probe, on saved checkpoints.

    .venv/bin/python bench/demo_probe.py --demos data/demos/libero_object --task 0 \
        --checkpoints "SFT=runs/sft_obj3/best" "TGRPO 16 it=runs/tgrpo_t0/checkpoint"

Scores each checkpoint on every step of the task's first ``--probe-demos`` demos, as ``tgrpo train`` logs
``probe/*`` (teacher-forced, temperature 1): the NLL of the expert's action tokens and the entropy of the
policy's token distributions, in nats per token. Then what evaluation deploys, the greedy action tokens: the
fraction equal to the expert's, and the fraction of tokens and of whole 7-token actions equal to those of the
first checkpoint (the start of an RL run, listed first, tells how far RL moved the policy that is evaluated).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tgrpo.config import TrainConfig
from tgrpo.envs import EnvConfig
from tgrpo.envs.libero_env import LiberoEnv
from tgrpo.policy.registry import load_policy
from tgrpo.sft import batch_inputs
from tgrpo.train import demo_probe, probe_metrics


@torch.no_grad()
def greedy_tokens(policy, rows, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, 7) greedy action bins of ``policy`` on every probe row (temperature 0, as evaluation decodes) and
    (R, 7) the expert's bins, in the policy's own normalisation."""
    policy.eval()
    best, expert = [], []
    for i in range(0, len(rows), batch_size):
        inputs, bins = batch_inputs(policy, rows, np.arange(i, min(i + batch_size, len(rows))))
        best.append(policy.sample(inputs, temperature=0.0)[0])
        expert.append(bins)
    return torch.cat(best), torch.cat(expert)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", nargs="+", required=True, help="LABEL=DIR policy checkpoints")
    p.add_argument("--demos", required=True)
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--probe-demos", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with LiberoEnv(EnvConfig(suite=args.suite, task=args.task, cameras=())) as env:  # the task's name and instruction
        task = env.task
    cfg = TrainConfig(suite=args.suite, task=args.task, demos=args.demos, probe_demos=args.probe_demos)
    print(f"{args.suite} task {args.task}, first {args.probe_demos} demos of {args.demos}\n")
    print("| policy | checkpoint | probe NLL (nats/token) | probe entropy (nats/token) | greedy = expert (tokens) "
          "| greedy = first (tokens) | greedy = first (actions) |")
    print("|---|---|---|---|---|---|---|")
    probe, first = None, None
    for item in args.checkpoints:
        label, _, path = item.rpartition("=")
        policy = load_policy(path)
        probe = probe if probe is not None else demo_probe(cfg, task, policy)
        m = probe_metrics(policy, probe)
        best, expert = greedy_tokens(policy, probe)
        first = best if first is None else first
        same = best == first
        print(f"| {label or path} | `{path}` | {m['probe/nll']:.3f} | {m['probe/entropy']:.3f} | "
              f"{(best == expert).float().mean():.3f} | {same.float().mean():.3f} | {same.all(1).float().mean():.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
