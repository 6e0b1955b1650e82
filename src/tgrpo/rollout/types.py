"""Typed containers passed between the rollout, reward, advantage and update stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from tgrpo.envs.libero_env import Observation, PrivilegedState, SceneGeometry, TaskInfo

STOP_RULES = ("first_success", "all_done")


@dataclass
class PolicyStep:
    """One batched policy call for B environments.

    Attributes:
        actions: (B, 7) float32 continuous actions sent to the environments.
        action_tokens: (B, 7) int64 action bin indices in [0, 255], or None for policies without tokens
            (scripted experts).
        logprobs: (B, 7) float32 log-probability of each sampled token under the sampling policy, or None.
    """

    actions: np.ndarray
    action_tokens: np.ndarray | None = None
    logprobs: np.ndarray | None = None


class RolloutPolicy(Protocol):
    """What the rollout engine needs from a policy: one batched action per step for the live envs."""

    def reset(self, num_envs: int) -> None:
        """Start new episodes for ``num_envs`` environments (clears per-episode memory)."""

    def act(self, observations: Sequence[Observation], instruction: str, env_ids: np.ndarray) -> PolicyStep:
        """Actions for ``observations`` (one per live env); ``env_ids`` (B,) are their group indices."""


@dataclass
class GroupRollout:
    """N trajectories of one task sampled from the same initial state (one TGRPO group).

    Step ``t`` pairs the observation *before* action ``t`` with that action. ``T`` is the common padded
    length: with the ``first_success`` rule every row has length ``T = M`` (the paper's common length);
    with ``all_done`` row ``i`` is valid for ``t < lengths[i]`` and padded after (see ``mask``).

    Attributes:
        task: the task rolled out.
        init_states: (N,) LIBERO fixed init-state index per row (all equal in a TGRPO group), or None
            for seeded random placements.
        seeds: (N,) placement seeds used at reset (meaningful when ``init_state`` is None).
        stop_rule: ``first_success`` or ``all_done``.
        images: camera -> (N, T, H, W, 3) uint8 observations before each action (empty without cameras).
        actions: (N, T, 7) float32 actions applied.
        action_tokens: (N, T, 7) int64 action bins, or None when the policy has no tokens.
        logprobs: (N, T, 7) float32 sampling log-probs of the tokens (log pi_old), or None.
        states: privileged states with leading dims (N, T + 1): index t is before action t, t + 1 after it.
        step_success: (N, T) bool, task solved right after action t.
        success: (N,) bool, task solved at the end of the row.
        mask: (N, T) bool, True on valid steps.
        lengths: (N,) int64 number of valid steps per row.
        scenes: (N,) scene geometry of each row's episode (for stage rewards and experts).
    """

    task: TaskInfo
    init_states: list[int | None]
    seeds: list[int | None]
    stop_rule: str
    images: dict[str, torch.Tensor]
    actions: torch.Tensor
    action_tokens: torch.Tensor | None
    logprobs: torch.Tensor | None
    states: PrivilegedState
    step_success: torch.Tensor
    success: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    scenes: list[SceneGeometry | None]

    @property
    def num_envs(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[1])

    def validate(self) -> None:
        """Check the documented shapes and mask consistency; raises ValueError on a mismatch."""
        n, t = self.num_envs, self.num_steps
        checks = {
            "actions": (self.actions.shape, (n, t, 7)),
            "step_success": (tuple(self.step_success.shape), (n, t)),
            "mask": (tuple(self.mask.shape), (n, t)),
            "success": (tuple(self.success.shape), (n,)),
            "lengths": (tuple(self.lengths.shape), (n,)),
            "states.ee_pos": (self.states.ee_pos.shape, (n, t + 1, 3)),
        }
        if self.action_tokens is not None:
            checks["action_tokens"] = (tuple(self.action_tokens.shape), (n, t, 7))
        if self.logprobs is not None:
            checks["logprobs"] = (tuple(self.logprobs.shape), (n, t, 7))
        for cam, img in self.images.items():
            checks[f"images[{cam}]"] = (tuple(img.shape[:2]), (n, t))
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"GroupRollout.{name} has shape {tuple(got)}, expected {want}")
        if not torch.equal(self.mask.sum(1), self.lengths):
            raise ValueError("GroupRollout.mask does not match lengths")
