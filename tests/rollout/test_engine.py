"""The rollout engine's stop rules on a synthetic pool (instant), and on the real simulator (sim)."""

import numpy as np
import pytest
import torch

from tgrpo.envs import EnvConfig, Observation, PrivilegedState, TaskInfo
from tgrpo.errors import ConfigError, TgrpoError
from tgrpo.policy.random_policy import RandomPolicy
from tgrpo.rollout import EnvPool, rollout_group
from tgrpo.rollout.engine import rollout_groups
from tgrpo.rollout.types import PolicyStep


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
        self.in_flight = []

    def _obs(self, i):
        done = self.succeed_at[i] is not None and self.steps[i] >= self.succeed_at[i]
        return Observation(images={"agentview": np.full((4, 4, 3), self.steps[i], np.uint8)},
                           state=_state(int(self.steps[i]), bool(done)))

    def reset(self, init_states, seeds=None):
        self.steps[:] = 0
        return [self._obs(i) for i in range(self.num_envs)]

    def step_send(self, actions, indices):
        indices = [int(i) for i in indices]
        assert len(actions) == len(indices)
        assert not set(indices) & set(self.in_flight), "an env was sent a step before its last one was collected"
        self.stepped.append(indices)
        self.in_flight += indices
        for i in indices:
            self.steps[i] += 1

    def step_recv(self, indices):
        indices = [int(i) for i in indices]
        assert self.in_flight[:len(indices)] == indices, "collected out of order"
        del self.in_flight[:len(indices)]
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
    # halves [0, 1] and [2]; env 0 finished after 3 steps and is not stepped again
    assert pool.stepped[4:8] == [[0, 1], [2], [1], [2]]
    assert (r.actions[0, 3:] == 0).all()
    np.testing.assert_array_equal(r.states.ee_pos[0, 3:, 0], [3, 3, 3, 3])  # padded with the last state


class EchoPolicy:
    """Deterministic: the action encodes the env index and its step; logs its calls in the pool's order."""

    def __init__(self, pool):
        self.pool = pool

    def reset(self, num_envs):
        pass

    def act(self, observations, instruction, env_ids):
        self.pool.stepped.append(("act", list(env_ids), list(self.pool.in_flight)))
        x = np.array([[i, o.state.ee_pos[0]] + [0] * 5 for i, o in zip(env_ids, observations)], np.float32)
        return PolicyStep(actions=x, action_tokens=x.astype(np.int64), logprobs=-x)


@pytest.mark.parametrize("succeed_at,rule", [([None, 6, 4, None], "first_success"),
                                              ([5, None, None, 3], "first_success"),
                                              ([None] * 5, "first_success"),
                                              ([3, None, 5, 2, None], "all_done")])
def test_overlapped_halves_give_the_same_group_as_one_batch(succeed_at, rule):
    runs = {}
    for overlap in (False, True):
        pool = ScriptedPool(succeed_at)
        runs[overlap] = (pool, rollout_group(pool, EchoPolicy(pool), init_state=0, max_steps=9, stop_rule=rule,
                                             overlap=overlap))
    (_, a), (pool, b) = runs[False], runs[True]
    for name in ("actions", "action_tokens", "logprobs", "step_success", "success", "mask", "lengths"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.images["agentview"], b.images["agentview"])
    np.testing.assert_array_equal(a.states.ee_pos, b.states.ee_pos)
    # the overlap happens: some policy calls run while the other half's workers are stepping
    assert any(e[0] == "act" and e[2] and not set(e[1]) & set(e[2]) for e in pool.stepped)


@pytest.mark.parametrize("rule", ["first_success", "all_done"])
def test_groups_in_flight_stop_on_their_own_and_equal_separate_rollouts(rule):
    # 3 groups of 2: group 1 = envs 2 and 3 spans both halves; env 3 succeeds at step 3, env 4 at step 5
    succeed_at = [None, None, None, 3, 5, None]
    runs = {}
    for overlap in (False, True):
        pool = ScriptedPool(succeed_at)
        runs[overlap] = rollout_groups(pool, EchoPolicy(pool), groups=3, init_state=0, max_steps=7, stop_rule=rule,
                                       overlap=overlap)
    a, b = runs[False], runs[True]
    want = {"first_success": [[7, 7], [3, 3], [5, 5]], "all_done": [[7, 7], [7, 3], [5, 7]]}[rule]
    assert [g.lengths.tolist() for g in a] == want
    for ga, gb in zip(a, b):
        for name in ("actions", "action_tokens", "step_success", "success", "mask", "lengths"):
            assert torch.equal(getattr(ga, name), getattr(gb, name)), name
    # each group equals the same envs rolled out as a group of their own (the action encodes the global env index)
    for g, (lo, hi) in enumerate([(0, 2), (2, 4), (4, 6)]):
        alone = rollout_group(ScriptedPool(succeed_at[lo:hi]), EchoPolicy(ScriptedPool([None])), init_state=0,
                              max_steps=7, stop_rule=rule)
        assert torch.equal(alone.lengths, a[g].lengths) and torch.equal(alone.success, a[g].success)
        assert torch.equal(alone.actions[..., 1], a[g].actions[..., 1])  # the step counter
    with pytest.raises(TgrpoError, match="6 envs cannot hold 4 groups"):
        rollout_groups(ScriptedPool(succeed_at), RandomPolicy(0), groups=4)


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
