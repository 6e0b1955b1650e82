import math

import torch

from tgrpo.algo import clipped_surrogate, kl_k3, tgrpo_loss, token_weights


def test_clipped_surrogate_hand_computed():
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    old = torch.zeros(4)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    obj, rho, clipped = clipped_surrogate(logp, old, adv, 0.2)
    torch.testing.assert_close(obj, torch.tensor([1.2, -1.5, 0.5, -0.8]))
    assert clipped.tolist() == [True, False, False, True]


def test_k3_hand_computed():
    kl = kl_k3(torch.log(torch.tensor([0.5, 0.3])), torch.log(torch.tensor([0.25, 0.3])))
    torch.testing.assert_close(kl, torch.tensor([0.5 - math.log(0.5) - 1, 0.0]))


def test_token_weights_average_per_trajectory_then_group():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    w = token_weights(mask)
    torch.testing.assert_close(w[0, 0], torch.tensor(1 / (2 * 7 * 4)))
    torch.testing.assert_close(w[1, 1], torch.tensor(1 / (2 * 7 * 2)))
    torch.testing.assert_close((w * 7).sum(), torch.tensor(1.0))


def _paper_objective(logp, old, ref, adv, mask, eps, beta):
    """J_TGRPO as written: mean over trajectories of the mean over their tokens."""
    per_traj = []
    for i in range(logp.shape[0]):
        terms = []
        for t in range(logp.shape[1]):
            if mask[i, t]:
                for k in range(logp.shape[2]):
                    rho = torch.exp(logp[i, t, k] - old[i, t, k])
                    surr = torch.minimum(rho * adv[i, t], torch.clamp(rho, 1 - eps, 1 + eps) * adv[i, t])
                    r = torch.exp(ref[i, t, k] - logp[i, t, k])
                    terms.append(surr - beta * (r - torch.log(r) - 1))
        per_traj.append(torch.stack(terms).mean())
    return torch.stack(per_traj).mean()


def test_weighted_loss_equals_the_paper_objective_and_minibatches_add_up():
    g = torch.Generator().manual_seed(0)
    n, t, k = 3, 5, 7
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]], dtype=torch.bool)
    theta = torch.randn(n, t, k, generator=g, requires_grad=True)
    logp = torch.nn.functional.logsigmoid(theta)
    old = logp.detach() + 0.3 * torch.randn(n, t, k, generator=g)
    ref = logp.detach() + 0.2 * torch.randn(n, t, k, generator=g)
    adv = torch.randn(n, t, generator=g)
    w = token_weights(mask)
    flat = mask.flatten()
    out = tgrpo_loss(logp.reshape(-1, k)[flat], old.reshape(-1, k)[flat], ref.reshape(-1, k)[flat], adv.flatten()[flat],
                     w.flatten()[flat], clip_eps=0.2, beta=0.05)
    expected = -_paper_objective(logp, old, ref, adv, mask, 0.2, 0.05)
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=0)
    (full_grad,) = torch.autograd.grad(out.loss, theta)
    # the same steps in two minibatches: summed gradients equal the full-batch gradient
    idx = torch.nonzero(flat).squeeze(1)
    grads = torch.zeros_like(theta)
    for part in (idx[:5], idx[5:]):
        lp = torch.nn.functional.logsigmoid(theta).reshape(-1, k)[part]
        o = tgrpo_loss(lp, old.reshape(-1, k)[part], ref.reshape(-1, k)[part], adv.flatten()[part], w.flatten()[part],
                       clip_eps=0.2, beta=0.05)
        grads += torch.autograd.grad(o.loss, theta)[0]
    torch.testing.assert_close(grads, full_grad, atol=1e-6, rtol=0)
    assert 0 <= float(out.clip_fraction) <= 1 and float(out.kl) >= 0


def test_on_policy_start_has_ratio_one_and_no_kl():
    logp = torch.log(torch.full((4, 7), 0.1))
    out = tgrpo_loss(logp, logp, logp, torch.tensor([1.0, -1, 0.5, 0]), torch.full((4,), 1 / 28))
    torch.testing.assert_close(out.ratio_mean, torch.tensor(1.0))
    assert float(out.kl) == 0 and float(out.clip_fraction) == 0


def test_dpo_loss_and_its_margin_gradient_hand_computed():
    from tgrpo.algo.loss import dpo_loss, dpo_margin_grad

    margin = torch.tensor([0.0, 10.0, -10.0], requires_grad=True)
    loss = dpo_loss(margin, beta=0.1)
    torch.testing.assert_close(loss.detach(), torch.tensor([math.log(2), math.log(1 + math.exp(-1)),
                                                            math.log(1 + math.e)]))
    loss.sum().backward()
    torch.testing.assert_close(margin.grad, dpo_margin_grad(margin.detach(), 0.1))
    torch.testing.assert_close(margin.grad[0], torch.tensor(-0.05))


def test_preference_pair_is_best_against_worst_and_none_on_ties():
    from tgrpo.algo.loss import preference_pair

    assert preference_pair(torch.tensor([1.0, 3.0, -2.0, 0.5])) == (1, 2)
    assert preference_pair(torch.tensor([2.0, 2.0, 2.0, 2.0])) is None
