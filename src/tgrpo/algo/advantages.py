"""Group-relative advantages of TGRPO (paper section 3.2), as pure functions of reward tensors.

Shapes: N trajectories of a group, T steps. ``mask[i, t]`` is True on valid steps (all True under the
paper's ``first_success`` stop rule, where every trajectory has the common length M).
"""

from __future__ import annotations

from typing import Callable

import torch

from tgrpo.errors import choice_error

EPS = 1e-6


def masked_zscore(x: torch.Tensor, mask: torch.Tensor, dim: int = 0, eps: float = EPS) -> torch.Tensor:
    """Z-score of ``x`` along ``dim`` over the entries where ``mask`` is True, with the sample std (N - 1).

    ``(x - mean) / (std + eps)``; entries outside the mask, and slices with fewer than two valid entries
    (nothing to compare against), get 0. A slice whose values are all equal gets 0 as well.
    """
    m = mask.to(x.dtype)
    n = m.sum(dim, keepdim=True)
    mean = (x * m).sum(dim, keepdim=True) / n.clamp(min=1)
    var = (((x - mean) * m) ** 2).sum(dim, keepdim=True) / (n - 1).clamp(min=1)
    z = (x - mean) / (var.sqrt() + eps)
    return torch.where(mask & (n >= 2), z, torch.zeros_like(z))


def absorb_success(rewards: torch.Tensor, mask: torch.Tensor, success: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Treat success as an absorbing state: a trajectory that succeeded keeps its last reward to the end.

    Under ``all_done`` a successful trajectory stops early while a failing one goes on collecting stage
    reward, so summed over valid steps alone a quick success can score below a long failure. Filling the
    steps after a success with its final reward (and counting them in the group comparisons) restores the
    order. Under ``first_success`` every row has the common length M and nothing changes.

    Args: rewards (N, T), mask (N, T) bool (valid steps form a prefix of each row), success (N,) bool.
    Returns: rewards (N, T) and mask (N, T) for the advantage estimators. Multiply the advantages by the
    original ``mask`` again: the filled steps have no action to credit.
    """
    lengths = mask.sum(1)
    last = rewards.gather(1, (lengths - 1).clamp(min=0)[:, None])
    absorbed = mask | (success.bool() & (lengths > 0))[:, None]
    return torch.where(mask, rewards, torch.where(absorbed, last, torch.zeros_like(rewards))), absorbed


def step_advantages(rewards: torch.Tensor, mask: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Step-level advantage, paper Eq. (2): ``A_step[i, t] = (R[i,t] - mean_j R[j,t]) / std_j R[j,t]``.

    Args: rewards (N, T), mask (N, T) bool. Returns (N, T), 0 on masked steps. At a step where fewer than
    two trajectories are still valid (``all_done`` mode) there is no group to compare with: 0.
    """
    return masked_zscore(rewards, mask, dim=0, eps=eps)


def trajectory_advantages(rewards: torch.Tensor, mask: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Trajectory-level advantage, paper Eq. (3): z-score of ``R_i = sum_t R[i, t]`` across the group.

    Args: rewards (N, T), mask (N, T) bool. Returns (N,).
    """
    returns = (rewards * mask.to(rewards.dtype)).sum(1)
    return masked_zscore(returns, torch.ones_like(returns, dtype=torch.bool), dim=0, eps=eps)


def tgrpo_advantages(rewards: torch.Tensor, mask: torch.Tensor, a1: float = 0.3, a2: float = 0.7,
                     eps: float = EPS) -> torch.Tensor:
    """Fused advantage, paper Eq. (4): ``Adv[i, t] = a1 * A_step[i, t] + a2 * A_traj[i]`` (0 on masked steps).

    Args: rewards (N, T), mask (N, T) bool; a1, a2 the paper's alpha_1, alpha_2 (0.3, 0.7). Returns (N, T).
    """
    adv = a1 * step_advantages(rewards, mask, eps) + a2 * trajectory_advantages(rewards, mask, eps)[:, None]
    return adv * mask.to(adv.dtype)


def grpo_advantages(rewards: torch.Tensor, mask: torch.Tensor, a1: float = 0.0, a2: float = 1.0,
                    eps: float = EPS) -> torch.Tensor:
    """The paper's "w/o step-level" ablation = plain GRPO: every step gets ``A_traj[i]``. (N, T)."""
    return trajectory_advantages(rewards, mask, eps)[:, None] * mask.to(rewards.dtype)


def step_only_advantages(rewards: torch.Tensor, mask: torch.Tensor, a1: float = 1.0, a2: float = 0.0,
                         eps: float = EPS) -> torch.Tensor:
    """The paper's "w/o trajectory-level" ablation: ``Adv[i, t] = A_step[i, t]``. (N, T)."""
    return step_advantages(rewards, mask, eps)


AdvantageFn = Callable[..., torch.Tensor]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "tgrpo": tgrpo_advantages,
    "grpo": grpo_advantages,
    "step": step_only_advantages,
}


def get_advantage_estimator(name: str) -> AdvantageFn:
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise choice_error("advantage estimator", name, ADVANTAGE_ESTIMATORS) from None
