"""Where the environments of a rollout run: a registry of pool backends with one interface.

``local``: one worker process per environment on this machine (:class:`EnvPool`). ``ray``: one Ray actor
per environment, anywhere on a Ray cluster (:class:`RayEnvPool`; Ray is imported only then). Both give the
rollout engine the same ``reset`` / ``step_send`` / ``step_recv`` / ``rebuild`` / ``close`` interface.
"""

from __future__ import annotations

from typing import Any, Callable

from tgrpo.envs.config import EnvConfig
from tgrpo.errors import choice_error


def _local(config: EnvConfig, num_envs: int, timeout_s: float, address: str | None) -> Any:
    from tgrpo.rollout.workers import EnvPool

    return EnvPool(config, num_envs, timeout_s=timeout_s)


def _ray(config: EnvConfig, num_envs: int, timeout_s: float, address: str | None) -> Any:
    from tgrpo.rollout.ray_pool import RayEnvPool

    return RayEnvPool(config, num_envs, timeout_s=timeout_s, address=address)


POOL_BACKENDS: dict[str, Callable[..., Any]] = {"local": _local, "ray": _ray}


def make_env_pool(backend: str, config: EnvConfig, num_envs: int, timeout_s: float = 120.0,
                  address: str | None = None) -> Any:
    """A pool of ``num_envs`` environments of ``config`` on ``backend`` (``address``: the Ray cluster)."""
    try:
        factory = POOL_BACKENDS[backend]
    except KeyError:
        raise choice_error("rollout.backend", backend, POOL_BACKENDS) from None
    return factory(config, num_envs, timeout_s, address)
