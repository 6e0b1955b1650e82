"""A uniformly random token policy: the baseline that exercises the rollout path without a model."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tgrpo.envs.libero_env import Observation
from tgrpo.policy.action_tokenizer import NUM_BINS, ActionTokenizer
from tgrpo.rollout.types import PolicyStep


class RandomPolicy:
    """Samples every action token uniformly from the 256 bins; each token's log-prob is -log(256)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tokenizer = ActionTokenizer()

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, observations: Sequence[Observation], instruction: str, env_ids: np.ndarray) -> PolicyStep:
        bins = self.rng.integers(0, NUM_BINS, size=(len(observations), 7))
        logp = np.full(bins.shape, -math.log(NUM_BINS), dtype=np.float32)
        return PolicyStep(actions=self.tokenizer.decode(bins), action_tokens=bins, logprobs=logp)
