"""Worker failures: a killed or hung worker is reported by env and step; the pool rebuilds; no zombies."""

import os
import signal

import numpy as np
import psutil
import pytest

from tgrpo.envs import EnvConfig
from tgrpo.errors import ConfigError
from tgrpo.rollout import EnvPool, WorkerError

pytestmark = pytest.mark.sim

CFG = EnvConfig(suite="libero_object", task=0, cameras=())


@pytest.fixture(scope="module")
def pool():
    p = EnvPool(CFG, num_envs=2, timeout_s=3.0)
    yield p
    p.close()


def test_killed_worker_is_named_and_pool_rebuilds(pool):
    pool.reset([0, 0])
    pool.step(np.zeros((2, 7)))
    os.kill(pool.pids[1], signal.SIGKILL)
    with pytest.raises(WorkerError, match="worker 1 failed during 'step' at step 1: worker process died") as info:
        pool.step(np.zeros((2, 7)))
    assert info.value.env_index == 1 and info.value.step == 1
    old = pool.pids
    pool.rebuild()
    assert not any(psutil.pid_exists(p) for p in old)
    obs = pool.reset([0, 0])
    assert len(obs) == 2 and len(pool.step(np.zeros((2, 7)))) == 2


def test_hung_worker_times_out(pool):
    pool.reset([0, 0])
    victim = pool.pids[0]
    os.kill(victim, signal.SIGSTOP)
    try:
        with pytest.raises(WorkerError, match=r"worker 0 failed during 'step' at step 0: no reply within 3 s \(hung\)"):
            pool.step(np.zeros((2, 7)))
    finally:
        os.kill(victim, signal.SIGCONT)
    with pytest.raises(Exception, match="pool is broken.*call rebuild"):
        pool.step(np.zeros((2, 7)))
    pool.rebuild()


def test_env_error_in_worker_carries_its_message(pool):
    pool.reset([0, 0])
    with pytest.raises(WorkerError, match="(?s)worker 0 failed during 'reset'.*init-state index"):
        pool.reset([99, 0])
    assert len(pool.step(np.zeros((2, 7)))) == 2  # an error raised inside the env leaves the pool usable


def test_close_leaves_no_process_behind():
    p = EnvPool(CFG, num_envs=1)
    pids = p.pids
    p.close()
    assert not any(psutil.pid_exists(pid) for pid in pids)
    with pytest.raises(ConfigError, match="num_envs must be at least 1"):
        EnvPool(CFG, num_envs=0)
