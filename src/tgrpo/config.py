"""Configuration of a TGRPO training run: one dataclass per component, composed into ``TrainConfig``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from tgrpo.algo.advantages import ADVANTAGE_ESTIMATORS
from tgrpo.envs.suites import NUM_INIT_STATES, get_suite
from tgrpo.errors import ConfigError, choice_error, range_error
from tgrpo.policy.config import PolicyConfig, TinyVLASize
from tgrpo.reward.sources import RewardConfig
from tgrpo.rollout.backends import POOL_BACKENDS
from tgrpo.rollout.types import STOP_RULES

TRAIN_INITS = ("random", "fixed")
OBJECTIVES = ("clip", "dpo")  # the update functions of tgrpo.train.OBJECTIVES


@dataclass(frozen=True)
class RolloutConfig:
    """Group sampling.

    Attributes:
        group_size: N, trajectories per group, all from the same initial state (paper: 4).
        stop_rule: ``first_success`` (paper: all stop when one succeeds, common length M) or ``all_done``.
        max_steps: steps per trajectory; None is the suite's protocol value (object: 280).
        train_init: ``random``: each group starts from a new seeded placement sampled from the task's BDDL
            regions, so LIBERO's 50 fixed init states stay held out for evaluation (default; differs from
            training on the fixed states, which would leak the test set); ``fixed``: from ``train_init_states``.
        train_init_states: fixed init-state indices for ``train_init="fixed"``.
        worker_timeout_s: seconds before an env worker counts as hung.
        overlap: step the two halves of the group out of phase, so the policy call for one half runs while
            the other half's workers simulate and render (not in the paper, which batches the whole group;
            the trajectories follow the same rules; the order of random draws and the policy's batch
            composition, hence float rounding, differ). Measured in
            docs/performance.md.
        backend: where the environments run: ``local`` (one process each on this machine) or ``ray`` (one
            Ray actor each, on any node of a Ray cluster; the policy stays in the learner). Same rollouts.
        ray_address: the Ray cluster for ``backend=ray``: None starts a private one on this machine,
            ``auto`` joins the one ``ray start --head`` runs here, ``ray://host:10001`` a remote one.
        groups_per_iteration: G, groups sampled at once, each from its own initial state, with one batched
            policy call per step for all G * N envs (several groups in flight, so more workers give more
            throughput). Each group then gets its own update, in order (the paper: G = 1).
        max_retries: a rollout whose worker dies or hangs is re-sampled on a rebuilt pool up to this many
            times in a row; then the run stops with a report (the last checkpoint is kept).
    """

    group_size: int = 4
    stop_rule: str = "first_success"
    max_steps: int | None = None
    train_init: str = "random"
    train_init_states: tuple[int, ...] = tuple(range(25))
    worker_timeout_s: float = 120.0
    overlap: bool = True
    backend: str = "local"
    ray_address: str | None = None
    groups_per_iteration: int = 1
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ConfigError(f"rollout.group_size must be >= 2 (a group needs something to compare with), "
                              f"got {self.group_size}")
        if self.stop_rule not in STOP_RULES:
            raise choice_error("rollout.stop_rule", self.stop_rule, STOP_RULES)
        if self.train_init not in TRAIN_INITS:
            raise choice_error("rollout.train_init", self.train_init, TRAIN_INITS)
        for i in self.train_init_states:
            if not 0 <= i < NUM_INIT_STATES:
                raise range_error("rollout.train_init_states entry", i, 0, NUM_INIT_STATES - 1)
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"rollout.max_steps must be >= 1, got {self.max_steps}")
        if not isinstance(self.overlap, bool):
            raise ConfigError(f"rollout.overlap must be true or false, got {self.overlap!r}")
        if self.backend not in POOL_BACKENDS:
            raise choice_error("rollout.backend", self.backend, POOL_BACKENDS)
        if self.groups_per_iteration < 1:
            raise ConfigError(f"rollout.groups_per_iteration must be >= 1, got {self.groups_per_iteration}")
        if self.max_retries < 0:
            raise ConfigError(f"rollout.max_retries must be >= 0, got {self.max_retries}")


@dataclass(frozen=True)
class AlgoConfig:
    """The TGRPO update.

    Attributes:
        objective: the update. ``clip``: the paper's clipped surrogate of the advantages minus ``beta`` * k3
            KL (TGRPO, and GRPO with ``advantage=grpo``). ``dpo``: the trajectory-preference baseline of the
            paper's comparison (OpenVLA-DPO, GRAPE): DPO on the group's highest- vs lowest-return
            trajectory, both from the same initial state; uses ``dpo_beta``, ``epochs`` and the reference
            policy, not the advantages, ``clip_eps`` or ``beta``.
        advantage: estimator: ``tgrpo`` (a1 * A_step + a2 * A_traj), ``grpo`` (A_traj only, the paper's
            "w/o step-level" ablation) or ``step`` (A_step only, "w/o trajectory-level").
        a1: alpha_1, weight of the step-level advantage (paper 0.3).
        a2: alpha_2, weight of the trajectory-level advantage (paper 0.7).
        clip_eps: epsilon of the clipped ratio (PPO/GRPO default 0.2; the paper does not state it).
        beta: weight of the k3 KL to the reference policy (GRPO's 0.04; the paper does not state it).
        epochs: K, passes over each group.
        minibatch_steps: steps (each 7 action tokens) per optimizer step; the loss of a minibatch is its
            weighted mean with the paper's per-trajectory-then-group weights.
        microbatch_steps: steps per forward/backward pass; gradients accumulate up to a minibatch, which
            bounds memory.
        lr: AdamW learning rate. Paper: 1e-5 with LoRA on the 7B OpenVLA. The default 1e-4 (10x) is a
            guess for the LoRA of a 4-layer model rather than a 7B one, not a tuned value (1e-4 and 3e-4
            are compared in docs/results.md).
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm.
        adv_eps: epsilon added to the group std in the z-scores.
        dpo_beta: DPO's inverse temperature on the trajectory log-ratio margin (DPO's usual 0.1).
    """

    objective: str = "clip"
    advantage: str = "tgrpo"
    a1: float = 0.3
    a2: float = 0.7
    clip_eps: float = 0.2
    beta: float = 0.04
    epochs: int = 2
    minibatch_steps: int = 128
    microbatch_steps: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    adv_eps: float = 1e-6
    dpo_beta: float = 0.1

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise choice_error("algo.objective", self.objective, OBJECTIVES)
        if self.dpo_beta <= 0:
            raise ConfigError(f"algo.dpo_beta must be > 0, got {self.dpo_beta}")
        if self.advantage not in ADVANTAGE_ESTIMATORS:
            raise choice_error("algo.advantage", self.advantage, ADVANTAGE_ESTIMATORS)
        if self.a1 < 0 or self.a2 < 0 or self.a1 + self.a2 <= 0:
            raise ConfigError(f"algo.a1 and algo.a2 must be >= 0 with a positive sum (paper: 0.3 and 0.7), "
                              f"got a1={self.a1}, a2={self.a2}")
        if not 0 < self.clip_eps < 1:
            raise ConfigError(f"algo.clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.beta < 0:
            raise ConfigError(f"algo.beta must be >= 0, got {self.beta}")
        for name in ("epochs", "minibatch_steps", "microbatch_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"algo.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class TrainConfig:
    """A TGRPO run on one task (the paper trains one task at a time).

    Attributes:
        suite, task: the task.
        demos: LIBERO-format demo file or directory of the task (keyposes for the reward).
        iterations: groups sampled and learned from.
        eval_every: iterations between evaluations on held-out fixed init states (0: only at the end).
        eval_init_states: fixed init states of the periodic evaluation.
        save_every: iterations between checkpoints.
        out: run directory.
        num_threads: torch threads for the update (rollouts use 1: the env workers use the cores).
        seed: seeds the placements, the sampling and the minibatch order.
        probe_demos: the first ``probe_demos`` demos of the task (from ``demos``) are scored before training
            and after every update: the policy's NLL of the expert's action tokens and its entropy
            (``probe/*`` scalars). They show how far RL moves the policy from the
            demonstrated behaviour, and whether its entropy grows, on the same observations every time
            (a group's own entropy depends on where its trajectories went). Not in the paper; 0 turns it off.
        policy: the policy; ``checkpoint`` is the SFT checkpoint to start from; ``lora_rank`` > 0 makes the
            frozen SFT weights the reference policy (paper: LoRA).
    """

    suite: str = "libero_object"
    task: int | str = 0
    demos: str | None = None
    iterations: int = 40
    eval_every: int = 10
    eval_init_states: tuple[int, ...] = tuple(range(25, 50))
    save_every: int = 1
    out: str = "runs/tgrpo"
    num_threads: int = 2
    seed: int = 0
    probe_demos: int = 2
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(lora_rank=16))
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)

    def __post_init__(self) -> None:
        get_suite(self.suite)
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.probe_demos < 0:
            raise ConfigError(f"probe_demos must be >= 0, got {self.probe_demos}")
        if self.eval_every < 0 or self.save_every < 1:
            raise ConfigError(f"eval_every must be >= 0 and save_every >= 1, got {self.eval_every}, {self.save_every}")
        for i in self.eval_init_states:
            if not 0 <= i < NUM_INIT_STATES:
                raise range_error("eval_init_states entry", i, 0, NUM_INIT_STATES - 1)
        if self.algo.objective == "dpo" and self.policy.lora_rank == 0:
            raise ConfigError("algo.objective=dpo compares against the reference policy, the base weights with "
                              "the LoRA adapter off: set policy.lora_rank > 0 (default 16)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_index_list(text: str, what: str) -> tuple[int, ...]:
    """``"0-24"``, ``"3,7"`` or ``"0-4,9"`` -> a tuple of ints (as the CLI's init-state lists)."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):  # "3,7," as the CLI always accepted
        lo, _, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
        except ValueError:
            raise ConfigError(f"{what} {text!r} is not a list of indices; write e.g. 0-24, 3,7 or [0, 1, 2]") from None
    return tuple(out)


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(sorted(f'{path}{k}' for k in unknown))}; valid: "
                          + ", ".join(f"{path}{k}" for k in names))
    kwargs = {}
    for key, value in data.items():
        sub = {"policy": PolicyConfig, "rollout": RolloutConfig, "reward": RewardConfig, "algo": AlgoConfig,
               "size": TinyVLASize}.get(key)
        if sub is not None and isinstance(value, dict):
            value = _build(sub, value, f"{path}{key}.")
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, (str, int)) and isinstance(names[key].default, tuple):
            value = parse_index_list(str(value), f"{path}{key}")  # e.g. eval_init_states=0-49
        kwargs[key] = value
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a validated TrainConfig from nested dicts (a JSON file, CLI overrides) over the defaults."""
    return _build(TrainConfig, _merge(TrainConfig().to_dict(), data), "")


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides to nested dicts (a copy): ``a.b=value`` strings, the value parsed as JSON
    (else kept as a string), or a dict ``{"a.b": value}`` of values as they are."""
    out = json.loads(json.dumps(data))
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value, e.g. algo.a1=0.5")
            key, raw = item.split("=", 1)
            try:
                items.append((key, json.loads(raw)))
            except json.JSONDecodeError:
                items.append((key, raw))
    for key, value in items:
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out
