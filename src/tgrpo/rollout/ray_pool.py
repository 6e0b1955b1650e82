"""The environment pool on Ray: each LIBERO environment is a Ray actor, possibly on another machine.

``RayEnvPool`` has the interface of :class:`tgrpo.rollout.workers.EnvPool` (``reset``, ``step_send`` /
``step_recv``, ``rebuild``, ``close``), so the rollout engine, the training loop and the evaluation use it
unchanged and produce the same :class:`GroupRollout` (the policy stays in the learner process and is called
once per step for all live envs). Observations travel through Ray's object store: shared memory on the same
node, the network otherwise.

Ray is imported only when this backend is chosen (``rollout.backend=ray``). Every node needs this package
installed (same version) and the headless-rendering set-up (``scripts/setup.sh``).

Failures: an actor that dies (its process or its node) or does not answer within ``timeout_s`` raises
:class:`WorkerError` naming the env, the command and the step, and is marked broken. ``rebuild()`` replaces
the broken actors only (every actor if none is marked), wherever Ray places the new ones.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from tgrpo.envs.config import EnvConfig
from tgrpo.envs.libero_env import LiberoEnv, Observation, TaskInfo
from tgrpo.errors import ConfigError, TgrpoError
from tgrpo.rollout.workers import PoolCommands, WorkerError

_RENDER_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "MUJOCO_EGL_DEVICE_ID")


class EnvActor:
    """The body of one Ray environment actor (wrapped by ``ray.remote`` in :class:`RayEnvPool`)."""

    def __init__(self, config: EnvConfig):
        self.env = LiberoEnv(config)

    def task(self) -> TaskInfo:
        return self.env.task

    def reset(self, kwargs: dict[str, Any]) -> Observation:
        return self.env.reset(**kwargs)

    def step(self, action: np.ndarray) -> Observation:
        return self.env.step(action)

    def model_xml(self) -> str:
        return self.env.model_xml()

    def pid(self) -> tuple[str, int]:
        import socket

        return socket.gethostname(), os.getpid()


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("rollout.backend=ray needs Ray: pip install 'tgrpo[ray]' (or ray==2.60.0)") from None
    return ray


class RayEnvPool(PoolCommands):
    """N LIBERO environments of one task as Ray actors.

    Args:
        config: the environment every actor builds.
        num_envs: number of actors.
        timeout_s: seconds to wait for one reply before declaring the actor hung.
        start_timeout_s: seconds to wait for the actors to be placed and to build their environments
            (a cluster without enough free CPUs fails here, with the cluster's resources in the message).
        address: Ray cluster to join: None starts a private local instance when Ray is not initialised yet,
            ``"auto"`` joins the cluster of ``ray start`` on this machine, ``"ray://host:10001"`` a remote one.
        cpus_per_env: CPUs Ray reserves for each actor (rendering is single-threaded: 1).
    """

    def __init__(self, config: EnvConfig, num_envs: int, timeout_s: float = 120.0, start_timeout_s: float = 300.0,
                 address: str | None = None, cpus_per_env: float = 1.0):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
        ray = _ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            if address is None:  # a private instance sized for the pool, on this machine only
                ray.init(num_cpus=max(os.cpu_count() or 1, int(np.ceil(num_envs * cpus_per_env))),
                         include_dashboard=False, logging_level="warning")
            else:
                ray.init(address=address, logging_level="warning")
        self.config, self.num_envs = config, num_envs
        self.timeout_s, self.start_timeout_s = timeout_s, start_timeout_s
        self.cpus_per_env = cpus_per_env
        self.step_count = 0
        self.replaced = 0  # actors replaced by rebuild() over the pool's life
        env_vars = {k: os.environ[k] for k in _RENDER_VARS if k in os.environ}
        self._remote = ray.remote(EnvActor).options(num_cpus=cpus_per_env, max_restarts=0,
                                                   runtime_env={"env_vars": env_vars})
        self._actors: list[Any] = [None] * num_envs
        self._pending: dict[int, Any] = {}
        self._broken: dict[int, str] = {}
        self.task: TaskInfo | None = None
        self._start(range(num_envs))

    # -- lifecycle -------------------------------------------------------------------------------------
    def _start(self, indices: Sequence[int]) -> None:
        ray = _ray()
        for i in indices:
            self._actors[i] = self._remote.remote(self.config)
        try:
            tasks = self._collect("start", {i: self._actors[i].task.remote() for i in indices}, self.start_timeout_s)
        except WorkerError as exc:
            self.close()
            raise WorkerError(exc.env_index, "start", 0, f"{exc.reason}\nRay cluster resources: "
                              f"{ray.cluster_resources()}, available: {ray.available_resources()}; each env "
                              f"actor needs {self.cpus_per_env} CPU") from None
        self.task = self.task or tasks[0]

    def _kill(self, i: int) -> None:
        if self._actors[i] is not None:
            try:
                _ray().kill(self._actors[i])
            except Exception:  # already dead
                pass

    def close(self) -> None:
        """Kill every actor. Safe to call twice. Shuts Ray down if this pool started it; a Ray instance
        that was already running (``ray start``, another pool) is left running."""
        ray = _ray()
        for i in range(self.num_envs):
            self._kill(i)
        self._actors = [None] * self.num_envs
        self._pending = {}
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()  # the instance this pool started

    def rebuild(self) -> None:
        """Replace the broken actors (all of them if none is marked) with fresh ones."""
        indices = sorted(self._broken) or list(range(self.num_envs))
        for i in indices:
            self._kill(i)
        self._broken, self._pending, self.step_count = {}, {}, 0
        self.replaced += len(indices)
        self._start(indices)

    @property
    def pids(self) -> list[int]:
        return [pid for _, pid in self.locations()]

    def locations(self) -> list[tuple[str, int]]:
        """(host name, process id) of every actor."""
        return _ray().get([a.pid.remote() for a in self._actors], timeout=self.timeout_s)

    # -- commands --------------------------------------------------------------------------------------
    def _collect(self, command: str, refs: dict[int, Any], timeout_s: float) -> list[Any]:
        """Wait for one reply per env; every reply is awaited before the first error is raised."""
        ray = _ray()
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        deadline = time.monotonic() + timeout_s
        results, errors = [], []
        for i, ref in refs.items():
            try:
                results.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
                continue
            except GetTimeoutError:
                reason = f"no reply within {timeout_s:.0f} s (hung, or not placed on the cluster)"
                self._broken[i] = reason
            except RayActorError as exc:
                reason = f"actor died ({type(exc).__name__}: {str(exc).splitlines()[0]})"
                self._broken[i] = reason
            except RayTaskError as exc:
                reason = "the environment raised:\n" + str(exc)
            errors.append(WorkerError(i, command, self.step_count, reason))
            results.append(None)
        if errors:
            raise errors[0]
        return results

    def _check(self) -> None:
        if self._broken:
            i, reason = next(iter(self._broken.items()))
            raise TgrpoError(f"the environment pool is broken (env {i}: {reason.splitlines()[0]}); call rebuild()")

    def call(self, command: str, args: Sequence[Any], indices: Sequence[int] | None = None) -> list[Any]:
        """Run ``command`` on the envs in ``indices`` (default all), one argument each, concurrently."""
        self._check()
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        refs = {i: getattr(self._actors[i], command).remote(*([] if a is None else [a])) for i, a in zip(indices, args)}
        return self._collect(command, refs, self.timeout_s)

    def step_send(self, actions: np.ndarray, indices: Sequence[int]) -> None:
        """Start stepping the envs in ``indices``; :meth:`step_recv` collects the observations."""
        self._check()
        for i, a in zip(indices, np.asarray(actions, dtype=np.float64)):
            self._pending[int(i)] = self._actors[int(i)].step.remote(a)

    def step_recv(self, indices: Sequence[int]) -> list[Observation]:
        refs = {int(i): self._pending.pop(int(i)) for i in indices}
        out = self._collect("step", refs, self.timeout_s)
        self.step_count += 1
        return out

