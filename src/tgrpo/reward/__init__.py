"""The multi-stage dense reward: stages (BDDL, file or LLM), keyposes from demos, R_t = f1 + f2."""

from tgrpo.reward.dense import DenseRewards, Keyposes, StageEvaluator, StageRewardParams, dense_rewards
from tgrpo.reward.keyposes import extract_keyposes, gripper_events
from tgrpo.reward.sources import RewardConfig, task_stages
from tgrpo.reward.stages import Stage, parse_stage_spec, stages_from_bddl, stages_to_json

__all__ = [
    "DenseRewards", "Keyposes", "RewardConfig", "Stage", "StageEvaluator", "StageRewardParams", "dense_rewards",
    "extract_keyposes", "gripper_events", "parse_stage_spec", "stages_from_bddl", "stages_to_json", "task_stages",
]
