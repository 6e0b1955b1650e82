"""Success of a policy on images rendered with and without multisample anti-aliasing, paired (issue 8).

    .venv/bin/python bench/msaa_success.py --checkpoint runs/sft_obj3/best --suite libero_object --task 0 \
        --init-states 25-49 --out runs/bench_msaa_obj0

Turning MSAA off renders a step about 1.33x faster (bench/render_cost.py) but changes the images at object
edges, and the policy was trained on anti-aliased frames. This measures what that costs in success: two
worker processes (one rendering env each: robosuite's offscreen contexts collide within a process), one
rendering as LIBERO's scene files ask (4 samples) and one with MSAA off, run the policy greedily (as in
evaluation) from the same fixed init states, each episode until success or the suite's max steps. Prints
the successes of each setting and the paired counts with the exact McNemar p. ``--out`` keeps one JSONL
per setting, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import torch

from tgrpo.config import parse_index_list
from tgrpo.envs import EnvConfig, LiberoEnv
from tgrpo.envs.suites import get_suite
from tgrpo.evaluation import mcnemar_exact_p
from tgrpo.policy.registry import load_policy

SETTINGS = {4: "MSAA 4x (LIBERO's scene files, the default)", 0: "MSAA off"}


def run_setting(checkpoint: str, suite: str, task: int, init_states: list[int], samples: int, out: Path) -> None:
    """Greedy episodes from ``init_states`` with ``samples``-fold MSAA, one JSON line each in ``out``."""
    torch.set_num_threads(1)
    policy = load_policy(checkpoint)
    max_steps = get_suite(suite).max_steps
    done = {json.loads(line)["init_state"] for line in out.read_text().splitlines()} if out.exists() else set()
    cfg = EnvConfig(suite=suite, task=task, cameras=policy.config.cameras, image_size=policy.config.image_size)
    with LiberoEnv(cfg) as env:
        env.set_multisampling(samples)
        for init_state in (i for i in init_states if i not in done):
            obs, steps = env.reset(init_state=init_state), 0
            while not obs.state.success and steps < max_steps:
                obs = env.step(policy.act([obs], env.task.language, np.zeros(1, int), temperature=0.0).actions[0])
                steps += 1
            with out.open("a") as fh:
                fh.write(json.dumps({"init_state": init_state, "success": bool(obs.state.success), "steps": steps}) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--init-states", default="25-49")
    p.add_argument("--out", required=True, help="directory for one JSONL per setting (resumed if present)")
    args = p.parse_args()
    init_states = list(parse_index_list(args.init_states, "init-state list"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {samples: out / f"msaa{samples}.jsonl" for samples in SETTINGS}
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=run_setting, args=(args.checkpoint, args.suite, args.task, init_states, samples, file))
               for samples, file in files.items()]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        if w.exitcode:
            raise SystemExit(f"a worker failed (exit code {w.exitcode})")
    results = {s: {r["init_state"]: r["success"] for r in map(json.loads, f.read_text().splitlines())}
               for s, f in files.items()}
    ok = np.array([[results[s][i] for s in SETTINGS] for i in init_states], dtype=bool)
    print(f"{args.suite} task {args.task}, init states {args.init_states} ({len(ok)}), {args.checkpoint}, greedy\n")
    print("| rendering | successes |")
    print("|---|---|")
    for k, name in enumerate(SETTINGS.values()):
        print(f"| {name} | {ok[:, k].sum()}/{len(ok)} |")
    only_on, only_off = int((ok[:, 0] & ~ok[:, 1]).sum()), int((~ok[:, 0] & ok[:, 1]).sum())
    print(f"\npaired: both {int((ok[:, 0] & ok[:, 1]).sum())}, only with MSAA {only_on}, only without {only_off}, "
          f"neither {int((~ok[:, 0] & ~ok[:, 1]).sum())}; exact McNemar p = {mcnemar_exact_p(only_on, only_off):.3f}")


if __name__ == "__main__":
    main()
