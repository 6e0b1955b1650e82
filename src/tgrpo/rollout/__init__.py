"""Group rollouts: environment worker pool, the rollout engine and its typed output."""

from tgrpo.rollout.engine import rollout_group
from tgrpo.rollout.types import STOP_RULES, GroupRollout, PolicyStep, RolloutPolicy
from tgrpo.rollout.workers import EnvPool, WorkerError

__all__ = ["EnvPool", "GroupRollout", "PolicyStep", "RolloutPolicy", "STOP_RULES", "WorkerError", "rollout_group"]
