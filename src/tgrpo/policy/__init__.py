"""Policies: the action tokenizer and the policy interface used by rollouts."""

from tgrpo.policy.action_tokenizer import NUM_BINS, ActionTokenizer

__all__ = ["ActionTokenizer", "NUM_BINS"]
