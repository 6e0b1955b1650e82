"""Stage rewards and keyposes on real expert and random rollouts of libero_object task 0."""

import numpy as np
import pytest

from tgrpo.data.collect import ExpertGroupPolicy, demo_from_rollout
from tgrpo.envs import EnvConfig, LiberoEnv
from tgrpo.policy.random_policy import RandomPolicy
from tgrpo.reward import Keyposes, StageEvaluator, StageRewardParams, dense_rewards, extract_keyposes, stages_from_bddl
from tgrpo.rollout import EnvPool, rollout_group

pytestmark = pytest.mark.sim
CFG = EnvConfig(suite="libero_object", task=0, cameras=())


@pytest.fixture(scope="module")
def rollouts():
    with EnvPool(CFG, num_envs=2) as pool:
        expert = rollout_group(pool, ExpertGroupPolicy(pool.task), init_state=0, stop_rule="all_done")
        random = rollout_group(pool, RandomPolicy(0), init_state=0, max_steps=40)
    return expert, random


def test_expert_climbs_every_stage_and_random_does_not(rollouts):
    expert, random = rollouts
    assert expert.success.all()
    stages = stages_from_bddl(expert.task)
    evaluator = StageEvaluator(expert.task, stages, Keyposes(), StageRewardParams())
    r = dense_rewards(evaluator, expert.states, expert.mask.numpy(), expert.scenes)
    for i in range(2):
        n = int(expert.lengths[i])
        seen = r.stage[i, :n]
        assert seen[0] == 0 and seen[-1] == len(stages)  # starts far away, ends with the goal true
        assert {1, 2, 3} <= set(seen.tolist()) or {2, 3} <= set(seen.tolist())  # passes grasp/move on the way
        assert r.rewards[i, n - 1] > r.rewards[i, 0] + 0.5
    rr = dense_rewards(evaluator, random.states, random.mask.numpy(), random.scenes)
    assert rr.stage.max() <= 1 and rr.rewards.mean() < r.rewards[r.stage > 0].mean()


def test_keyposes_from_expert_demos(rollouts):
    expert, _ = rollouts
    demos = [demo_from_rollout(expert, i) for i in range(2)]
    with LiberoEnv(CFG) as env:
        kp = extract_keyposes(demos, env, stages_from_bddl(expert.task))
    grasp = kp.grasp["alphabet_soup_1"]
    release = kp.release["basket_1_contain_region"]
    assert kp.demos == {"grasp:alphabet_soup_1": 2, "release:basket_1_contain_region": 2}
    assert np.linalg.norm(grasp) < 0.06  # the hand closes on the can
    assert release[2] > 0.0 and np.linalg.norm(release[:2]) < 0.08  # released above the basket
    assert Keyposes.from_dict(kp.to_dict()).grasp["alphabet_soup_1"].tolist() == grasp.tolist()
