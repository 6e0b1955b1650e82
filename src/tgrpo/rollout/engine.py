"""The group rollout: N environments from one initial state, one batched policy call per step."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from tgrpo.envs.libero_env import PrivilegedState
from tgrpo.errors import TgrpoError, choice_error
from tgrpo.rollout.types import STOP_RULES, GroupRollout, PolicyStep, RolloutPolicy
from tgrpo.rollout.workers import EnvPool


def _check_policy_step(out: PolicyStep, batch: int) -> None:
    for name in ("actions", "action_tokens", "logprobs"):
        value = getattr(out, name)
        if value is None and name != "actions":
            continue
        shape = np.shape(value)
        if shape != (batch, 7):
            raise TgrpoError(f"policy returned {name} of shape {shape}, expected ({batch}, 7)")
    if not np.all(np.isfinite(out.actions)):
        raise TgrpoError(f"policy returned non-finite actions: {np.asarray(out.actions).tolist()}")


def _pad(rows: list[list[np.ndarray]], length: int, fill_last: bool = False) -> np.ndarray:
    """Stack ragged per-env lists into (N, length, ...), padding with zeros or the last element."""
    out = []
    for row in rows:
        row = list(row)
        pad = row[-1] if fill_last else np.zeros_like(row[0])
        out.append(np.stack(row + [pad] * (length - len(row))))
    return np.stack(out)


def rollout_group(
    pool: EnvPool,
    policy: RolloutPolicy,
    *,
    init_state: int | None | Sequence[int | None] = None,
    seeds: Sequence[int | None] | None = None,
    max_steps: int | None = None,
    stop_rule: str = "first_success",
    record_images: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    overlap: bool = True,
) -> GroupRollout:
    """Roll out one group: reset all N envs to the same initial state and step them together.

    Args:
        pool: the N environments (all of one task).
        policy: called once per step with the observations of all live envs.
        init_state: LIBERO fixed init-state index for every env (a TGRPO group), a sequence with one index
            per env (independent evaluation episodes), or None for seeded random placements.
        seeds: (N,) placement seeds for ``init_state=None`` (one per env; equal seeds give equal scenes).
        max_steps: step budget after the settle steps; default the suite's protocol value.
        stop_rule: ``first_success`` (paper: all stop as soon as one env succeeds, or at ``max_steps``,
            so every row has the common length M) or ``all_done`` (each env runs until its own success or
            ``max_steps``; finished envs are not stepped and their rows are masked).
        record_images: keep the camera images in the result (off when only states/actions are needed).
        on_step: called as ``on_step(t, num_live)`` after every step (progress display).
        overlap: step the two halves of the group out of phase, so that the policy call for one half
            overlaps the other half's simulation and rendering (docs/performance.md). The trajectories
            follow the same rules either way; the order of the policy's random draws differs, and so
            does its batch composition (float rounding of a batched call can differ in the last bits).

    Returns:
        A validated :class:`GroupRollout`.
    """
    if stop_rule not in STOP_RULES:
        raise choice_error("stop rule", stop_rule, STOP_RULES)
    task = pool.task
    n = pool.num_envs
    max_steps = task.max_steps if max_steps is None else int(max_steps)
    seeds = list(seeds) if seeds is not None else [None] * n
    init_states = list(init_state) if isinstance(init_state, Sequence) else [init_state] * n
    obs = pool.reset(init_states, seeds)
    scenes = [o.scene for o in obs]
    policy.reset(n)

    cams = list(obs[0].images) if record_images else []
    images: dict[str, list[list[np.ndarray]]] = {c: [[] for _ in range(n)] for c in cams}
    actions: list[list[np.ndarray]] = [[] for _ in range(n)]
    tokens: list[list[np.ndarray]] = [[] for _ in range(n)]
    logps: list[list[np.ndarray]] = [[] for _ in range(n)]
    states: list[list[PrivilegedState]] = [[o.state] for o in obs]
    step_success: list[list[bool]] = [[] for _ in range(n)]
    live = np.ones(n, dtype=bool)
    has_tokens = True

    def act(ids: np.ndarray) -> PolicyStep:
        nonlocal has_tokens
        out = policy.act([obs[i] for i in ids], task.language, ids)
        _check_policy_step(out, len(ids))
        has_tokens = has_tokens and out.action_tokens is not None and out.logprobs is not None
        return out

    def record(ids: np.ndarray, out: PolicyStep, new: list) -> np.ndarray:
        """Append step t of the envs ``ids``; returns which of them solved the task."""
        for k, i in enumerate(ids):
            for c in cams:
                images[c][i].append(obs[i].images[c])
            actions[i].append(np.asarray(out.actions[k], dtype=np.float32))
            if has_tokens:
                tokens[i].append(np.asarray(out.action_tokens[k], dtype=np.int64))
                logps[i].append(np.asarray(out.logprobs[k], dtype=np.float32))
            obs[i] = new[k]
            states[i].append(new[k].state)
            step_success[i].append(new[k].success)
        solved = np.array([o.success for o in new], dtype=bool)
        if stop_rule == "all_done":
            live[ids[solved]] = False
        return solved

    # Two halves of the group are stepped out of phase, so the policy call for one half runs while the
    # workers of the other half simulate and render (``overlap``). Each step t still pairs every env's
    # observation t with its action t, and both halves' results for step t are known before any env is sent
    # step t + 1, so the stop rules are exactly those of the one-batch loop.
    halves = np.array_split(np.arange(n), 2 if overlap and n > 1 else 1)
    ahead: PolicyStep | None = None  # half 0's next action, computed while half 1 was stepping
    for t in range(max_steps):
        ids = [h[live[h]] for h in halves]  # the live envs of each half
        outs: list[PolicyStep | None] = [None] * len(halves)
        for h, hid in enumerate(ids):
            if len(hid):
                outs[h] = ahead if (h == 0 and ahead is not None) else act(hid)
                pool.step_send(outs[h].actions, hid)  # half h steps while half h + 1's policy call runs
        ahead = None
        stop = False
        for h, hid in enumerate(ids):
            if not len(hid):
                continue
            solved = record(hid, outs[h], pool.step_recv(hid))
            stop = stop or (stop_rule == "first_success" and bool(solved.any()))
            if h == 0 and len(halves) > 1 and not stop and t + 1 < max_steps and live[halves[0]].any():
                ahead = act(halves[0][live[halves[0]]])  # runs while the other half's workers step
        if on_step is not None:
            on_step(t, int(sum(len(hid) for hid in ids)))
        if stop or not live.any():
            break

    lengths = np.array([len(a) for a in actions], dtype=np.int64)
    length = int(lengths.max())
    mask = np.arange(length)[None, :] < lengths[:, None]
    padded_states = [s + [s[-1]] * (length + 1 - len(s)) for s in states]
    ss = _pad([[np.bool_(x) for x in row] for row in step_success], length)
    rollout = GroupRollout(
        task=task,
        init_states=init_states,
        seeds=seeds,
        stop_rule=stop_rule,
        images={c: torch.from_numpy(_pad(images[c], length)) for c in cams},
        actions=torch.from_numpy(_pad(actions, length)),
        action_tokens=torch.from_numpy(_pad(tokens, length)) if has_tokens else None,
        logprobs=torch.from_numpy(_pad(logps, length)) if has_tokens else None,
        states=PrivilegedState.stack([PrivilegedState.stack(row) for row in padded_states]),
        step_success=torch.from_numpy(ss & mask),
        success=torch.from_numpy((ss & mask).any(axis=1)),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths),
        scenes=scenes,
    )
    rollout.validate()
    return rollout
