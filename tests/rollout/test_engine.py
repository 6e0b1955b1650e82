"""The rollout engine's stop rules on a synthetic pool (instant), and on the real simulator (sim)."""

import numpy as np
import pytest
import torch

from tgrpo.envs import EnvConfig, Observation, PrivilegedState, TaskInfo
from tgrpo.errors import ConfigError, TgrpoError
from tgrpo.policy.random_policy import RandomPolicy
from tgrpo.rollout import EnvPool, rollout_group


def _state(t: int, success: bool) -> PrivilegedState:
    z = np.zeros
    return PrivilegedState(ee_pos=np.full(3, float(t)), ee_quat=z(4), ee_mat=np.eye(3), gripper_qpos=z(2),
                           joint_pos=z(7), object_pos=z((1, 3)), object_quat=z((1, 4)), articulation_qpos=z(0),
                           goal_flags=np.array([success]), success=np.array(success), sim_state=z(5))


class ScriptedPool:
    """Stands in for EnvPool: env i succeeds after ``succeed_at[i]`` steps (None = never)."""

    def __init__(self, succeed_at):
        self.succeed_at = succeed_at
        self.num_envs = len(succeed_at)
        self.task = TaskInfo("libero_object", 0, "t", "do it", "x.bddl", (("in", "a", "b"),), max_steps=50)
        self.steps = np.zeros(self.num_envs, dtype=int)
        self.stepped = []

    def _obs(self, i):
        done = self.succeed_at[i] is not None and self.steps[i] >= self.succeed_at[i]
        return Observation(images={"agentview": np.full((4, 4, 3), self.steps[i], np.uint8)},
                           state=_state(int(self.steps[i]), bool(done)))

    def reset(self, init_states, seeds=None):
        self.steps[:] = 0
        return [self._obs(i) for i in range(self.num_envs)]

    def step(self, actions, indices=None):
        indices = list(range(self.num_envs)) if indices is None else list(indices)
        assert len(actions) == len(indices)
        self.stepped.append(indices)
        for i in indices:
            self.steps[i] += 1
        return [self._obs(i) for i in indices]


def test_first_success_stops_every_env_at_the_first_success():
    pool = ScriptedPool([None, 6, 4, None])
    r = rollout_group(pool, RandomPolicy(0), init_state=0, max_steps=20, stop_rule="first_success")
    assert r.num_steps == 4 and r.lengths.tolist() == [4, 4, 4, 4] and bool(r.mask.all())
    assert r.success.tolist() == [False, False, True, False]
    assert r.step_success[2].tolist() == [False, False, False, True]
    assert r.states.ee_pos.shape == (4, 5, 3) and r.states.ee_pos[1, 4, 0] == 4.0
    assert r.images["agentview"][0, :, 0, 0, 0].tolist() == [0, 1, 2, 3]  # observation before each action
    assert r.action_tokens.shape == (4, 4, 7) and torch.allclose(r.logprobs, torch.tensor(-np.log(256.0)).float())


def test_first_success_runs_to_max_steps_when_nobody_succeeds():
    r = rollout_group(ScriptedPool([None, None]), RandomPolicy(0), init_state=0, max_steps=7)
    assert r.num_steps == 7 and not r.success.any()


def test_all_done_masks_finished_envs_and_stops_stepping_them():
    pool = ScriptedPool([3, None, 5])
    r = rollout_group(pool, RandomPolicy(0), init_state=0, max_steps=6, stop_rule="all_done")
    assert r.lengths.tolist() == [3, 6, 5] and r.num_steps == 6
    assert r.mask.tolist()[0] == [True] * 3 + [False] * 3
    assert r.success.tolist() == [True, False, True]
    assert pool.stepped[3] == [1, 2]  # env 0 finished after 3 steps and is not stepped again
    assert (r.actions[0, 3:] == 0).all()
    np.testing.assert_array_equal(r.states.ee_pos[0, 3:, 0], [3, 3, 3, 3])  # padded with the last state


def test_unknown_stop_rule_and_bad_policy_output_are_refused():
    with pytest.raises(ConfigError, match="stop rule 'sometimes'.*first_success, all_done"):
        rollout_group(ScriptedPool([None]), RandomPolicy(0), stop_rule="sometimes")

    class NaNPolicy(RandomPolicy):
        def act(self, observations, instruction, env_ids):
            out = super().act(observations, instruction, env_ids)
            out.actions[:] = np.nan
            return out

    with pytest.raises(TgrpoError, match="non-finite actions"):
        rollout_group(ScriptedPool([None]), NaNPolicy(0), max_steps=3)


@pytest.mark.sim
def test_group_of_two_real_envs_with_a_random_policy():
    with EnvPool(EnvConfig(suite="libero_object", task=0, image_size=64), num_envs=2) as pool:
        r = rollout_group(pool, RandomPolicy(0), init_state=5, max_steps=6)
        assert r.num_envs == 2 and r.num_steps == 6
        assert set(r.images) == {"agentview", "wrist"} and r.images["agentview"].shape == (2, 6, 64, 64, 3)
        # same initial state in both envs, then different random actions -> different end states
        np.testing.assert_allclose(r.states.object_pos[0, 0], r.states.object_pos[1, 0], atol=1e-9)
        assert np.abs(r.states.ee_pos[0, -1] - r.states.ee_pos[1, -1]).max() > 1e-4
        assert r.task.language == "pick up the alphabet soup and place it in the basket"
