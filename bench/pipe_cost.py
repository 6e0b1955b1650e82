"""What the worker pipe costs per env step, against the step itself (issue 8: inter-process traffic).

    .venv/bin/python bench/pipe_cost.py --steps 30 --repeats 200

Takes real observations (both cameras at 128x128 and the privileged state) from one LIBERO env, then sends
them from a child process to this one through a ``multiprocessing`` pipe, as an EnvPool worker returns its
step, and times pickling plus transfer plus unpickling per observation. Prints it next to the env's own
step time (simulation and rendering in this process), so the share the pipe adds is read off directly.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import time

import numpy as np

from tgrpo.envs import EnvConfig
from tgrpo.envs.libero_env import LiberoEnv


def _sender(conn, payloads: list[bytes], repeats: int) -> None:
    observations = [pickle.loads(p) for p in payloads]
    for k in range(repeats):
        conn.send(observations[k % len(observations)])
    conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--steps", type=int, default=30, help="env steps to time and to take observations from")
    p.add_argument("--repeats", type=int, default=200, help="observations sent through the pipe")
    args = p.parse_args()

    env = LiberoEnv(EnvConfig(suite=args.suite, task=args.task, cameras=("agentview", "wrist"), image_size=128))
    env.reset(init_state=0)
    rng = np.random.default_rng(0)
    env.step(rng.uniform(-1, 1, 7))
    observations, start = [], time.perf_counter()
    for _ in range(args.steps):
        observations.append(env.step(rng.uniform(-1, 1, 7)))
    step_ms = 1000 * (time.perf_counter() - start) / args.steps
    env.close()
    payloads = [pickle.dumps(o) for o in observations]

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_sender, args=(send, payloads, args.repeats))
    child.start()
    send.close()
    recv.recv()  # the child has started and sent its first observation
    start = time.perf_counter()
    for _ in range(args.repeats - 1):
        recv.recv()
    pipe_ms = 1000 * (time.perf_counter() - start) / (args.repeats - 1)
    child.join()

    print(f"{args.suite} task {args.task}, agentview + wrist at 128x128")
    print(f"observation: {np.mean([len(b) for b in payloads]) / 1024:.0f} KiB pickled")
    print(f"env step (simulation + rendering + privileged state): {step_ms:.1f} ms")
    print(f"pipe (pickle + transfer + unpickle, child -> parent): {pipe_ms:.2f} ms per observation "
          f"({100 * pipe_ms / step_ms:.1f}% of a step)")


if __name__ == "__main__":
    main()
