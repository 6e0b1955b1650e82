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


def rollout_group(pool: EnvPool, policy: RolloutPolicy, **kwargs) -> GroupRollout:
    """Roll out one group: reset all N envs of ``pool`` to the same initial state and step them together.

    The keyword arguments are those of :func:`rollout_groups` (with ``groups=1``)."""
    return rollout_groups(pool, policy, groups=1, **kwargs)[0]


def rollout_groups(
    pool: EnvPool,
    policy: RolloutPolicy,
    *,
    groups: int = 1,
    init_state: int | None | Sequence[int | None] = None,
    seeds: Sequence[int | None] | None = None,
    max_steps: int | None = None,
    stop_rule: str = "first_success",
    record_images: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    overlap: bool = True,
) -> list[GroupRollout]:
    """Roll out ``groups`` groups at once on one pool: envs ``[g * N, (g + 1) * N)`` form group g.

    Every step, the live envs of all groups share one batched policy call, and their workers step
    concurrently (several groups in flight). Each group follows its stop rule on its own.

    Args:
        pool: ``groups * N`` environments, all of one task.
        policy: called once per step with the observations of all live envs.
        groups: number of groups G; ``pool.num_envs`` must be a multiple of it.
        init_state: LIBERO fixed init-state index for every env, a sequence with one index per env (a TGRPO
            group repeats one index N times; evaluation gives independent ones), or None for seeded random
            placements.
        seeds: one placement seed per env for ``init_state=None`` (equal seeds give equal scenes).
        max_steps: step budget after the settle steps; default the suite's protocol value.
        stop_rule: ``first_success`` (paper: a group stops as soon as one of its envs succeeds, or at
            ``max_steps``, so each of its rows has the group's common length M) or ``all_done`` (each env runs
            until its own success or ``max_steps``; finished envs are not stepped and their rows are masked).
        record_images: keep the camera images in the result (off when only states/actions are needed).
        on_step: called as ``on_step(t, num_live)`` after every step (progress display).
        overlap: step the two halves of the envs out of phase, so that the policy call for one half
            overlaps the other half's simulation and rendering (docs/performance.md). The trajectories
            follow the same rules either way; the order of the policy's random draws differs, and so
            does its batch composition (float rounding of a batched call can differ in the last bits).

    Returns:
        One validated :class:`GroupRollout` per group, in order.
    """
    if stop_rule not in STOP_RULES:
        raise choice_error("stop rule", stop_rule, STOP_RULES)
    task = pool.task
    n = pool.num_envs
    if groups < 1 or n % groups:
        raise TgrpoError(f"a pool of {n} envs cannot hold {groups} groups of equal size")
    member = np.arange(n) // (n // groups)  # the group of each env
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

    def act(ids: np.ndarray) -> tuple[np.ndarray, PolicyStep]:
        nonlocal has_tokens
        out = policy.act([obs[i] for i in ids], task.language, ids)
        _check_policy_step(out, len(ids))
        has_tokens = has_tokens and out.action_tokens is not None and out.logprobs is not None
        return ids, out

    def rows(call: tuple[np.ndarray, PolicyStep], ids: np.ndarray) -> PolicyStep:
        """The rows of a policy call for ``ids`` (a subset of the envs it was made for)."""
        made_for, out = call
        if np.array_equal(made_for, ids):
            return out
        keep = np.isin(made_for, ids)
        pick = (lambda x: None if x is None else np.asarray(x)[keep])  # noqa: E731
        return PolicyStep(pick(out.actions), pick(out.action_tokens), pick(out.logprobs))

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

    # Two halves of the envs are stepped out of phase, so the policy call for one half runs while the
    # workers of the other half simulate and render (``overlap``). Each step t still pairs every env's
    # observation t with its action t, and both halves' results for step t are known before any env is sent
    # step t + 1, so the stop rules are exactly those of the one-batch loop. A group that stops at step t
    # (``first_success``) is stopped after both halves recorded step t: its rows share the length t + 1.
    halves = np.array_split(np.arange(n), 2 if overlap and n > 1 else 1)
    ahead: tuple[np.ndarray, PolicyStep] | None = None  # half 0's next actions, computed while half 1 stepped
    for t in range(max_steps):
        ids = [h[live[h]] for h in halves]  # the live envs of each half
        outs: list[PolicyStep | None] = [None] * len(halves)
        for h, hid in enumerate(ids):
            if len(hid):
                outs[h] = rows(ahead, hid) if (h == 0 and ahead is not None) else act(hid)[1]
                pool.step_send(outs[h].actions, hid)  # half h steps while half h + 1's policy call runs
        ahead = None
        stopped: set[int] = set()  # groups that succeeded at step t (first_success)
        for h, hid in enumerate(ids):
            if not len(hid):
                continue
            solved = record(hid, outs[h], pool.step_recv(hid))
            if stop_rule == "first_success":
                stopped.update(member[hid[solved]].tolist())
            if h == 0 and len(halves) > 1 and t + 1 < max_steps:
                nxt = halves[0][live[halves[0]] & ~np.isin(member[halves[0]], list(stopped))]
                if len(nxt):
                    ahead = act(nxt)  # runs while the other half's workers step
        live[np.isin(member, list(stopped))] = False
        if on_step is not None:
            on_step(t, int(sum(len(hid) for hid in ids)))
        if not live.any():
            break

    out = []
    for g in range(groups):
        env_ids = np.flatnonzero(member == g)
        out.append(_assemble(task, [init_states[i] for i in env_ids], [seeds[i] for i in env_ids], stop_rule,
                             {c: [images[c][i] for i in env_ids] for c in cams}, [actions[i] for i in env_ids],
                             [tokens[i] for i in env_ids] if has_tokens else None,
                             [logps[i] for i in env_ids] if has_tokens else None,
                             [states[i] for i in env_ids], [step_success[i] for i in env_ids],
                             [scenes[i] for i in env_ids]))
    return out


def _assemble(task, init_states, seeds, stop_rule, images, actions, tokens, logps, states, step_success,
              scenes) -> GroupRollout:
    """Pad one group's per-env step lists to its longest row and pack them as a validated GroupRollout."""
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
        images={c: torch.from_numpy(_pad(rows, length)) for c, rows in images.items()},
        actions=torch.from_numpy(_pad(actions, length)),
        action_tokens=torch.from_numpy(_pad(tokens, length)) if tokens is not None else None,
        logprobs=torch.from_numpy(_pad(logps, length)) if logps is not None else None,
        states=PrivilegedState.stack([PrivilegedState.stack(row) for row in padded_states]),
        step_success=torch.from_numpy(ss & mask),
        success=torch.from_numpy((ss & mask).any(axis=1)),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths),
        scenes=scenes,
    )
    rollout.validate()
    return rollout
