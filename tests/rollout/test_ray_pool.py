"""The Ray backend on one local Ray instance (loopback): the local engine's rollouts, a killed actor replaced
alone, and a training run with two groups in flight."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from tgrpo.envs import EnvConfig
from tgrpo.errors import TgrpoError
from tgrpo.policy.random_policy import RandomPolicy
from tgrpo.rollout import EnvPool, WorkerError, rollout_group
from tgrpo.rollout.ray_pool import RayEnvPool

pytestmark = [pytest.mark.sim, pytest.mark.slow]

CFG = EnvConfig(suite="libero_object", task=0, cameras=("agentview",), image_size=64)


@pytest.fixture(scope="module")
def ray_pool():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, logging_level="warning")  # the pools below join it
    pool = RayEnvPool(CFG, num_envs=2, timeout_s=60.0)
    yield pool
    pool.close()
    ray.shutdown()


def test_ray_backend_gives_the_local_engines_rollouts(ray_pool):
    starts = [{"init_state": 3}, {"init_state": None, "seeds": [7, 7]}]
    with EnvPool(CFG, num_envs=2) as pool:
        pairs = [(rollout_group(ray_pool, RandomPolicy(0), max_steps=8, **s),
                  rollout_group(pool, RandomPolicy(0), max_steps=8, **s)) for s in starts]
    for remote, local in pairs:
        for name in ("actions", "action_tokens", "logprobs", "mask", "success"):
            assert torch.equal(getattr(remote, name), getattr(local, name)), name
        assert torch.equal(remote.images["agentview"], local.images["agentview"])
        np.testing.assert_array_equal(remote.states.object_pos, local.states.object_pos)
        np.testing.assert_array_equal(remote.states.ee_pos, local.states.ee_pos)
        assert not np.array_equal(remote.states.ee_pos[0, 0], remote.states.ee_pos[0, -1])  # the arm moved
    assert not np.array_equal(pairs[0][0].states.object_pos[0, 0], pairs[1][0].states.object_pos[0, 0])


def test_killed_actor_is_named_and_replaced_alone(ray_pool):
    ray_pool.reset([0, 0])
    ray_pool.step(np.zeros((2, 7)))
    keep, victim = ray_pool.pids
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerError, match="worker 1 failed during 'step' at step 1: actor died") as info:
        ray_pool.step(np.zeros((2, 7)))
    assert info.value.env_index == 1
    with pytest.raises(TgrpoError, match="pool is broken.*env 1.*call rebuild"):
        ray_pool.step(np.zeros((2, 7)))
    ray_pool.rebuild()
    assert ray_pool.pids[0] == keep and ray_pool.pids[1] != victim and ray_pool.replaced == 1
    assert len(ray_pool.reset([0, 0])) == 2 and len(ray_pool.step(np.zeros((2, 7)))) == 2
    ray_pool.close()  # frees the instance's CPUs for the training run below


def test_training_on_ray_with_two_groups_in_flight(ray_pool, tmp_path, tiny_sft):
    from tgrpo.config import train_config_from_dict
    from tgrpo.train import train

    ray_pool.close()  # its actors would hold 2 of the instance's 4 CPUs
    cfg = train_config_from_dict({
        "suite": "libero_object", "task": 0, "iterations": 1, "eval_every": 0, "eval_init_states": [48, 49],
        "out": str(tmp_path / "run"), "num_threads": 1, "probe_demos": 0,
        "policy": {"checkpoint": str(tiny_sft), "lora_rank": 4},
        "rollout": {"group_size": 2, "max_steps": 5, "backend": "ray", "groups_per_iteration": 2},
        "algo": {"epochs": 1}})
    summary = train(cfg)
    hist = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["history"]
    assert hist[0]["rollout/groups"] == 2 and hist[0]["rollout/length"] == 5
    assert hist[0]["update/optimizer_steps"] == 1  # per group (the mean over the two groups' updates)
    assert summary["evals"][0]["episodes"] == 2  # evaluated on the same 4 Ray actors
