"""A pool of LIBERO environments, each in its own worker process.

Rendering dominates a LIBERO step and is single-threaded inside MuJoCo, so N environments run in N
processes and are stepped concurrently: every command is sent to all workers first, then all replies
are collected. Workers are started with ``spawn`` (no fork of a parent that holds torch threads or a GL
context).

Failure handling: a worker that raises sends its traceback back; one that dies (EOF on its pipe, exit
code) or hangs (no reply within ``timeout_s``) raises :class:`WorkerError` naming the env, the command
and the step. ``rebuild()`` replaces every worker; ``close()`` terminates and joins them all (also at
interpreter exit), so no process is left behind. A worker exits by itself when its parent goes away.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import signal
import sys
import time
import traceback
import weakref
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from tgrpo.envs.config import EnvConfig
from tgrpo.envs.libero_env import LiberoEnv, Observation, TaskInfo
from tgrpo.errors import ConfigError, TgrpoError


class WorkerError(TgrpoError):
    """An environment worker failed, died or hung. Attributes name the env index, command and step."""

    def __init__(self, env_index: int, command: str, step: int, reason: str):
        self.env_index, self.command, self.step, self.reason = env_index, command, step, reason
        super().__init__(
            f"environment worker {env_index} failed during '{command}' at step {step}: {reason}\n"
            "The pool can be rebuilt with EnvPool.rebuild(); if this repeats, run with --num-envs 1 to "
            "see the simulator's own error."
        )


T = TypeVar("T")


def with_worker_retries(pool, attempt: Callable[[], T], retries: int = 3, what: str = "rollout",
                        hint: str = "") -> tuple[T, int]:
    """Run ``attempt()``; when a worker dies or hangs (:class:`WorkerError`), replace the pool's workers
    (``pool.rebuild()``) and run it again, up to ``retries`` more times in a row.

    ``attempt`` must start from scratch each time (reset its envs), as a rollout does. Returns its result
    and the number of failed attempts; after ``retries + 1`` failures raises :class:`TgrpoError` naming the
    last one, followed by ``hint`` (what was kept, what to do).
    """
    last = None
    for failures in range(retries + 1):
        try:
            return attempt(), failures
        except WorkerError as exc:
            last = exc
            again = failures < retries
            print(f"warning: {what} attempt {failures + 1} failed ({exc.reason.splitlines()[0]}; env "
                  f"{exc.env_index}, step {exc.step})" + ("; replacing the workers and running it again" if again else ""),
                  file=sys.stderr)
            if again:
                pool.rebuild()
    raise TgrpoError(f"the {what} failed {retries + 1} times in a row; stopping. Last failure: {last}"
                     + (f"\n{hint}" if hint else ""))


def _worker_main(conn: Connection, config: EnvConfig, index: int) -> None:
    """Body of a worker process: build one env, then serve commands until 'close' or parent exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent, which closes us
    try:
        env = LiberoEnv(config)
    except BaseException:  # report any start-up failure, including bad config, to the parent
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", env.task))
    while True:
        try:
            command, arg = conn.recv()
        except (EOFError, OSError):  # parent died or closed the pipe
            break
        if command == "close":
            break
        try:
            if command == "reset":
                out: Any = env.reset(**arg)
            elif command == "step":
                out = env.step(arg)
            elif command == "model_xml":
                out = env.model_xml()
            else:
                raise ValueError(f"unknown worker command {command!r}")
            conn.send(("ok", out))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
    env.close()
    conn.close()


_LIVE_POOLS: "weakref.WeakSet[EnvPool]" = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


class PoolCommands:
    """The commands every pool backend offers, built on its ``call``, ``step_send``, ``step_recv`` and
    ``close`` (:class:`EnvPool` here, ``RayEnvPool`` on Ray)."""

    num_envs: int
    step_count: int

    def reset(self, init_states: Sequence[int | None], seeds: Sequence[int | None] | None = None) -> list[Observation]:
        """Reset every env: ``init_states[i]`` is a fixed init-state index or None (random placement)."""
        if len(init_states) != self.num_envs:
            raise ConfigError(f"reset needs {self.num_envs} init states, got {len(init_states)}")
        seeds = list(seeds) if seeds is not None else [None] * self.num_envs
        self.step_count = 0
        return self.call("reset", [{"init_state": s, "seed": sd} for s, sd in zip(init_states, seeds)])

    def step(self, actions: np.ndarray, indices: Sequence[int] | None = None) -> list[Observation]:
        """Step the envs in ``indices`` (default all) with ``actions`` (len(indices), 7), concurrently."""
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        self.step_send(actions, indices)
        return self.step_recv(indices)

    def model_xml(self, indices: Sequence[int]) -> list[str]:
        return self.call("model_xml", [None] * len(indices), indices)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EnvPool(PoolCommands):
    """N LIBERO environments of one task, in N worker processes.

    Args:
        config: the environment every worker builds (same suite, task, cameras).
        num_envs: number of workers (the group size N of TGRPO).
        timeout_s: seconds to wait for one reply before declaring the worker hung.
        start_timeout_s: seconds to wait for a worker to build its environment.
    """

    def __init__(self, config: EnvConfig, num_envs: int, timeout_s: float = 120.0, start_timeout_s: float = 300.0):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
        self.config = config
        self.num_envs = num_envs
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.step_count = 0
        self._procs: list[mp.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self.task: TaskInfo | None = None
        self._broken: str | None = None
        self._wait = timeout_s
        self._start()
        _LIVE_POOLS.add(self)

    # -- lifecycle -----------------------------------------------------------------------------------

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        for i in range(self.num_envs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, self.config, i), daemon=True, name=f"tgrpo-env-{i}")
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        try:
            tasks = self._gather("start", range(self.num_envs), self.start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.task = tasks[0]

    def close(self) -> None:
        """Stop every worker (politely, then by force) and reap it. Safe to call twice."""
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5.0
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2.0)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []

    def rebuild(self) -> None:
        """Replace all workers with fresh ones (after a :class:`WorkerError`)."""
        self.close()
        self.step_count = 0
        self._broken = None
        self._start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    # -- commands ------------------------------------------------------------------------------------

    def _send(self, command: str, args: Sequence[Any], indices: Sequence[int]) -> None:
        if self._broken:
            raise TgrpoError(f"the environment pool is broken ({self._broken.splitlines()[0]}); call rebuild()")
        for i, arg in zip(indices, args):
            try:
                self._conns[i].send((command, arg))
            except (OSError, ValueError) as exc:
                raise WorkerError(i, command, self.step_count, f"worker is gone ({exc}); exit code "
                                  f"{self._procs[i].exitcode}") from None

    def _receive(self, i: int, command: str, deadline: float) -> Any:
        conn, proc = self._conns[i], self._procs[i]
        while not conn.poll(0.05):
            if not proc.is_alive() and not conn.poll(0):
                raise WorkerError(i, command, self.step_count, f"worker process died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise WorkerError(i, command, self.step_count, f"no reply within {self._wait:.0f} s (hung)")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError):
            raise WorkerError(i, command, self.step_count, f"worker process died (exit code {proc.exitcode})") from None
        if status == "error":
            raise WorkerError(i, command, self.step_count, "the environment raised:\n" + payload)
        return payload

    def _gather(self, command: str, indices: Sequence[int] | range, timeout_s: float) -> list[Any]:
        """Collect one reply from each worker in ``indices``. Every reply is drained before the first
        error is raised, so the pipes stay in step; a dead or hung worker marks the pool broken."""
        self._wait = timeout_s
        results, errors = [], []
        for i in indices:
            try:
                results.append(self._receive(i, command, time.monotonic() + timeout_s))
            except WorkerError as exc:
                errors.append(exc)
                results.append(None)
        if errors:
            if any("environment raised" not in e.reason for e in errors):
                self._broken = errors[0].reason
            raise errors[0]
        return results

    def call(self, command: str, args: Sequence[Any], indices: Sequence[int] | None = None) -> list[Any]:
        """Send ``command`` with one argument per worker in ``indices`` (default all), then collect."""
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        self._send(command, args, indices)
        return self._gather(command, indices, self.timeout_s)

    def step_send(self, actions: np.ndarray, indices: Sequence[int]) -> None:
        """Start stepping the envs in ``indices`` and return at once; :meth:`step_recv` collects the
        observations. Other work (the policy call for other envs) can run in between."""
        self._send("step", list(np.asarray(actions, dtype=np.float64)), list(indices))

    def step_recv(self, indices: Sequence[int]) -> list[Observation]:
        """Wait for the envs in ``indices``, which :meth:`step_send` started, and return their observations."""
        out = self._gather("step", list(indices), self.timeout_s)
        self.step_count += 1
        return out

