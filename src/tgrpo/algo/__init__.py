"""TGRPO's algorithm: group-relative advantages and the clipped objective with KL."""

from tgrpo.algo.advantages import (
    ADVANTAGE_ESTIMATORS, absorb_success, get_advantage_estimator, masked_zscore, step_advantages, tgrpo_advantages,
    trajectory_advantages,
)
from tgrpo.algo.loss import LossOutput, clipped_surrogate, kl_k3, tgrpo_loss, token_weights

__all__ = [
    "ADVANTAGE_ESTIMATORS", "LossOutput", "absorb_success", "clipped_surrogate", "get_advantage_estimator", "kl_k3",
    "masked_zscore", "step_advantages", "tgrpo_advantages", "tgrpo_loss", "token_weights", "trajectory_advantages",
]
