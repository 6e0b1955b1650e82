"""The TGRPO objective (paper Eq. 6): clipped surrogate minus beta * k3 KL to the reference policy.

Token-level terms are combined with explicit weights so that minibatching is exact: the paper averages
over each trajectory's tokens, then over the group, i.e. token weight ``1 / (N * 7 * len_i)``. A
minibatch's loss is the weighted *sum* over its tokens, and the gradients of all minibatches of a group
add up to the gradient of the full objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def token_weights(mask: torch.Tensor, tokens_per_step: int = 7) -> torch.Tensor:
    """Weights ``1 / (N * tokens_per_step * len_i)`` on valid steps, 0 elsewhere.

    Args: mask (N, T) bool. Returns (N, T) float; each valid step carries one token's weight (its
    ``tokens_per_step`` tokens each get this weight). The weights of all tokens sum to 1.
    """
    m = mask.float()
    lengths = m.sum(1, keepdim=True).clamp(min=1)
    return m / (lengths * mask.shape[0] * tokens_per_step)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_eps: float):
    """``min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)`` with ``rho = exp(logp - old_logp)``.

    Args: logp, old_logp (..., K) per-token log-probs; adv broadcastable to them. Returns
    (objective, rho, clipped) of the same shape, ``clipped`` True where the clipped branch is taken.
    """
    rho = torch.exp(logp - old_logp)
    unclipped = rho * adv
    clipped = torch.clamp(rho, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    return torch.minimum(unclipped, clipped), rho, clipped < unclipped


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Unbiased, non-negative KL estimator k3 (paper Eq. 7): ``pi_ref/pi - log(pi_ref/pi) - 1`` per token."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


@dataclass
class LossOutput:
    """The loss to minimise and detached metrics (weighted like the loss)."""

    loss: torch.Tensor
    policy_objective: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor
    entropy: torch.Tensor


def tgrpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor,
               weights: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.04,
               entropy: torch.Tensor | None = None) -> LossOutput:
    """Negative TGRPO objective on B steps of K tokens.

    Args:
        logp: (B, K) log pi_theta of the sampled tokens (with gradients).
        old_logp: (B, K) log pi_old (the sampling policy).
        ref_logp: (B, K) log pi_ref (adapter disabled), or None when beta = 0.
        adv: (B,) advantage of each step (shared by its K tokens).
        weights: (B,) per-token weight of each step (``token_weights`` flattened); sums over the whole
            group to 1 / K per token so the loss of all minibatches adds up to the paper's average.
        clip_eps: PPO clip epsilon.
        beta: KL coefficient.
        entropy: optional (B, K) per-token entropies for the metric.
    """
    w = weights[:, None].expand_as(logp)
    objective, rho, clipped = clipped_surrogate(logp, old_logp, adv[:, None], clip_eps)
    kl = kl_k3(logp, ref_logp) if ref_logp is not None and beta > 0 else torch.zeros_like(logp)
    loss = -((objective - beta * kl) * w).sum()
    total = w.sum().clamp(min=1e-12)
    with torch.no_grad():
        return LossOutput(
            loss=loss,
            policy_objective=(objective * w).sum() / total,
            kl=(kl * w).sum() / total,
            clip_fraction=(clipped.float() * w).sum() / total,
            ratio_mean=(rho * w).sum() / total,
            ratio_max=rho.max(),
            entropy=(entropy * w).sum() / total if entropy is not None else torch.tensor(float("nan")),
        )


def preference_pair(returns: torch.Tensor, min_gap: float = 1e-6) -> tuple[int, int] | None:
    """The (chosen, rejected) trajectories of a group: highest and lowest return, or None when all returns are
    within ``min_gap`` of each other (nothing to prefer). Args: returns (N,). Ties go to the lowest index."""
    best, worst = int(torch.argmax(returns)), int(torch.argmin(returns))
    return None if float(returns[best] - returns[worst]) <= min_gap else (best, worst)


def dpo_loss(margin: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's loss on trajectory pairs (Rafailov et al. 2023; GRAPE's trajectory-wise form):
    ``-log sigmoid(beta * margin)`` with ``margin = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)``, each
    trajectory's log-ratio summed over all its action tokens. Args: margin (P,) for P pairs. Returns (P,)."""
    return -torch.nn.functional.logsigmoid(beta * margin)


def dpo_margin_grad(margin: torch.Tensor, beta: float) -> torch.Tensor:
    """``d dpo_loss / d margin = -beta * sigmoid(-beta * margin)`` (P,). The loss depends on a trajectory's
    tokens only through its summed log-prob, so ``grad * (sum logp_w - sum logp_l)`` backpropagated in
    micro-batches gives the exact gradient without holding a whole trajectory's graph in memory."""
    return -beta * torch.sigmoid(-beta * margin)
