import pytest
import torch

from tgrpo.algo import absorb_success, get_advantage_estimator, step_advantages, tgrpo_advantages, trajectory_advantages
from tgrpo.errors import ConfigError

FULL = torch.ones(3, 2, dtype=torch.bool)


def test_hand_computed_group():
    r = torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0]])
    # step 0: 1, 3, 2 -> mean 2, sample std 1 -> -1, 1, 0; step 1: all equal -> 0
    torch.testing.assert_close(step_advantages(r, FULL), torch.tensor([[-1.0, 0], [1, 0], [0, 0]]), atol=1e-5, rtol=0)
    # returns 3, 5, 4 -> -1, 1, 0
    torch.testing.assert_close(trajectory_advantages(r, FULL), torch.tensor([-1.0, 1, 0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(tgrpo_advantages(r, FULL, 0.3, 0.7),
                               torch.tensor([[-1.0, -0.7], [1.0, 0.7], [0.0, 0.0]]), atol=1e-5, rtol=0)


def test_equal_rewards_give_zero_advantage():
    r = torch.full((4, 5), 0.7)
    for name in ("tgrpo", "grpo", "step"):
        assert torch.equal(get_advantage_estimator(name)(r, torch.ones(4, 5, dtype=torch.bool)), torch.zeros(4, 5))


def test_masks_of_all_done_mode_hand_computed():
    r = torch.tensor([[1.0, 99, 99], [2, 4, 6], [3, 8, 99]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    s = 8 ** 0.5  # step 1: 4 and 8 -> mean 6, sample std sqrt(8)
    torch.testing.assert_close(step_advantages(r, mask),
                               torch.tensor([[-1.0, 0, 0], [0, -2 / s, 0], [1, 2 / s, 0]]), atol=1e-5, rtol=0)
    sd = 37 ** 0.5  # returns 1, 12, 11 -> mean 8, sample std sqrt((49 + 16 + 9) / 2)
    torch.testing.assert_close(trajectory_advantages(r, mask), torch.tensor([-7 / sd, 4 / sd, 3 / sd]), atol=1e-5, rtol=0)
    adv = tgrpo_advantages(r, mask)
    assert torch.equal(adv[~mask], torch.zeros(int((~mask).sum())))


def test_success_is_absorbing_under_all_done():
    # row 0 succeeds after 2 steps; rows 1-2 fail and run on, collecting stage reward
    r = torch.tensor([[1.0, 2, 0, 0], [0.5, 0.5, 0.5, 0.5], [1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    success = torch.tensor([True, False, False])
    assert trajectory_advantages(r, mask)[0] < trajectory_advantages(r, mask)[2]  # 3 < 4: the success ranks below
    filled, live = absorb_success(r, mask, success)
    torch.testing.assert_close(filled[0], torch.tensor([1.0, 2, 2, 2]))
    assert live.all() and torch.equal(filled[1:], r[1:])
    sd = (19 / 3) ** 0.5  # returns 7, 2, 4: mean 13/3, squared deviations 64/9 + 49/9 + 1/9 over 2
    torch.testing.assert_close(trajectory_advantages(filled, live),
                               torch.tensor([8 / 3 / sd, -7 / 3 / sd, -1 / 3 / sd]), atol=1e-5, rtol=0)
    # a failure that timed out early is not absorbed, and first_success rows (all valid) are unchanged
    failed, failed_live = absorb_success(r, mask, torch.zeros(3, dtype=torch.bool))
    assert torch.equal(failed_live, mask) and torch.equal(failed[0], torch.tensor([1.0, 2, 0, 0]))
    full = torch.ones(3, 4, dtype=torch.bool)
    assert torch.equal(absorb_success(r, full, success)[0], r)


def _loop_tgrpo(r, mask, a1, a2, eps=1e-6):
    """The paper's equations, written as plain loops."""
    n, t_max = r.shape
    out = torch.zeros(n, t_max)
    returns = [sum(float(r[i, t]) for t in range(t_max) if mask[i, t]) for i in range(n)]
    mu = sum(returns) / n
    sd = (sum((x - mu) ** 2 for x in returns) / (n - 1)) ** 0.5
    a_traj = [(x - mu) / (sd + eps) for x in returns]
    for t in range(t_max):
        live = [i for i in range(n) if mask[i, t]]
        if len(live) >= 2:
            m = sum(float(r[i, t]) for i in live) / len(live)
            s = (sum((float(r[i, t]) - m) ** 2 for i in live) / (len(live) - 1)) ** 0.5
        for i in live:
            a_step = (float(r[i, t]) - m) / (s + eps) if len(live) >= 2 else 0.0
            out[i, t] = a1 * a_step + a2 * a_traj[i]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_the_readable_loop(seed):
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(5, 9, generator=g)
    lengths = torch.randint(1, 10, (5,), generator=g)
    mask = torch.arange(9)[None, :] < lengths[:, None]
    torch.testing.assert_close(tgrpo_advantages(r, mask, 0.4, 0.6), _loop_tgrpo(r, mask, 0.4, 0.6), atol=1e-5, rtol=0)


def test_ablations_and_unknown_name():
    r = torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0]])
    torch.testing.assert_close(get_advantage_estimator("grpo")(r, FULL), trajectory_advantages(r, FULL)[:, None].expand(3, 2))
    torch.testing.assert_close(get_advantage_estimator("step")(r, FULL), step_advantages(r, FULL))
    with pytest.raises(ConfigError, match="advantage estimator 'ppo'.*tgrpo, grpo, step"):
        get_advantage_estimator("ppo")
