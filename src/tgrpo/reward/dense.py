"""The multi-stage dense reward ``R_t = f1 + f2`` (paper section 3.1), computed from privileged state.

* ``f1`` (stage reward): ``k / S`` where ``k`` is the furthest stage whose completion test holds in the
  state after action t, and S the number of stages.
* ``f2`` (shaping): ``w * exp(-|ee - keypose_k| / sigma) / S``, closeness of the end-effector to the
  reference keypose of the current (first unfinished) stage; 1/S once every stage is done. Scaling by
  1/S keeps any shaping inside a stage worth less than finishing that stage.

Keyposes are offsets from the stage's anchor (the key object for approach/grasp, the target for
move/place, the articulated part for actuate), taken from successful demonstrations at their grasp,
release and contact events (:mod:`tgrpo.reward.keyposes`), so they transfer across initial states.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tgrpo.envs.libero_env import PrivilegedState, SceneGeometry, TaskInfo
from tgrpo.envs.scene import SceneView, gripper_opening
from tgrpo.reward.stages import Stage

# Gripper finger opening (qpos[0] - qpos[1]): about 0.08 fully open, ~0.002 closed on nothing.
HOLDING_OPENING = (0.005, 0.075)
LIFT_HEIGHT = 0.02  # metres above the object's initial height that count as lifted
HOLD_DISTANCE = 0.08  # end-effector within this distance of the object centre while holding it
APPROACH_RADIUS = 0.03  # end-effector within this distance of the grasp keypose
ABOVE_TARGET_XY = 0.04  # object centre within this xy distance of the target (plus the target's half size)


@dataclass
class Keyposes:
    """Reference end-effector offsets (metres, world axes) from successful demos.

    Attributes:
        grasp: object -> (3,) end-effector minus object position when the gripper closes on it.
        release: target -> (3,) end-effector minus target centre when the gripper opens over it.
        contact: joint -> (3,) end-effector minus the part's origin when the part starts to move.
        demos: number of demos each entry was averaged over (same keys).
    """

    grasp: dict[str, np.ndarray] = field(default_factory=dict)
    release: dict[str, np.ndarray] = field(default_factory=dict)
    contact: dict[str, np.ndarray] = field(default_factory=dict)
    demos: dict[str, int] = field(default_factory=dict)

    # Without demos: grasp at the object's origin, release 8 cm above the target, touch the part's origin.
    DEFAULTS = {"grasp": (0.0, 0.0, 0.0), "release": (0.0, 0.0, 0.08), "contact": (0.0, 0.0, 0.0)}

    def offset(self, kind: str, name: str) -> np.ndarray:
        return np.asarray(getattr(self, kind).get(name, self.DEFAULTS[kind]), dtype=np.float64)

    def to_dict(self) -> dict:
        return {k: {n: np.asarray(v).tolist() for n, v in getattr(self, k).items()} for k in ("grasp", "release", "contact")} | {
            "demos": dict(self.demos)}

    @classmethod
    def from_dict(cls, data: dict) -> "Keyposes":
        return cls(**{k: {n: np.asarray(v, float) for n, v in data.get(k, {}).items()} for k in ("grasp", "release", "contact")},
                   demos=dict(data.get("demos", {})))


@dataclass(frozen=True)
class StageRewardParams:
    """Shape of the dense reward. ``sigma``: distance scale of the shaping (m); ``shaping_weight``: w."""

    sigma: float = 0.1
    shaping_weight: float = 1.0


def target_centre(view: SceneView, target: str) -> np.ndarray:
    """World centre of a target: a BDDL region (following its parent and drawer) or a body."""
    if target in view.geometry.regions:
        return view.region_centre(target)
    return view.centre(target)


def target_half_xy(view: SceneView, target: str) -> float:
    if target in view.geometry.regions:
        return float(np.max(view.geometry.regions[target].half_size[:2]))
    lo, hi = view.box(target)
    return float(np.max(hi[:2] - lo[:2]) / 2)


class StageEvaluator:
    """Evaluates stage completion and keyposes for one task on privileged states."""

    def __init__(self, task: TaskInfo, stages: list[Stage], keyposes: Keyposes, params: StageRewardParams):
        self.task, self.stages, self.keyposes, self.params = task, stages, keyposes, params

    def holding(self, view: SceneView, obj: str, initial_z: float) -> bool:
        lo, hi = HOLDING_OPENING
        return (lo < gripper_opening(view.state) < hi and view.pos(obj)[2] - initial_z > LIFT_HEIGHT
                and np.linalg.norm(view.ee - view.centre(obj)) < HOLD_DISTANCE)

    def keypose(self, view: SceneView, stage: Stage) -> np.ndarray:
        if stage.kind in ("approach", "grasp"):
            return view.pos(stage.object) + self.keyposes.offset("grasp", stage.object)
        if stage.kind in ("move", "place"):
            return target_centre(view, stage.target) + self.keyposes.offset("release", stage.target)
        part = view.geometry.parts[stage.joint]
        return part.pos + part.axis * (view.qpos(stage.joint) - part.qpos) + self.keyposes.offset("contact", stage.joint)

    def complete(self, view: SceneView, stage: Stage, initial: SceneView) -> bool:
        if stage.kind == "approach":
            return bool(np.linalg.norm(view.ee - self.keypose(view, stage)) < APPROACH_RADIUS)
        if stage.kind == "grasp":
            return self.holding(view, stage.object, initial.pos(stage.object)[2])
        if stage.kind == "move":
            near = np.linalg.norm(view.centre(stage.object)[:2] - target_centre(view, stage.target)[:2])
            return (self.holding(view, stage.object, initial.pos(stage.object)[2])
                    and near < ABOVE_TARGET_XY + target_half_xy(view, stage.target))
        return bool(view.state.goal_flags[stage.predicate])  # place, actuate

    def evaluate(self, state: PrivilegedState, initial: PrivilegedState, geometry: SceneGeometry) -> tuple[int, float, float]:
        """(stage index k reached, f1, f2) for one state; ``initial`` is the episode's first state."""
        view, start = SceneView(self.task, geometry, state), SceneView(self.task, geometry, initial)
        k = 0
        for j, stage in enumerate(self.stages):
            if self.complete(view, stage, start):
                k = j + 1
        s = len(self.stages)
        if k == s:
            return k, 1.0, self.params.shaping_weight / s
        d = float(np.linalg.norm(view.ee - self.keypose(view, self.stages[k])))
        return k, k / s, self.params.shaping_weight * float(np.exp(-d / self.params.sigma)) / s


@dataclass
class DenseRewards:
    """Per-step rewards of a group (R_t for the state after action t).

    Attributes:
        rewards: (N, T) float32 ``f1 + f2`` (0 on masked steps).
        f1: (N, T) stage reward; f2: (N, T) shaping; stage: (N, T) int stage index reached.
    """

    rewards: np.ndarray
    f1: np.ndarray
    f2: np.ndarray
    stage: np.ndarray


def dense_rewards(evaluator: StageEvaluator, states: PrivilegedState, mask: np.ndarray,
                  scenes: list[SceneGeometry]) -> DenseRewards:
    """Rewards for states with leading dims (N, T + 1): ``R[i, t]`` scores ``states[i, t + 1]``."""
    n, t_max = mask.shape
    f1 = np.zeros((n, t_max), np.float32)
    f2 = np.zeros((n, t_max), np.float32)
    stage = np.zeros((n, t_max), np.int64)
    for i in range(n):
        first = states.index((i, 0))
        for t in range(t_max):
            if mask[i, t]:
                stage[i, t], f1[i, t], f2[i, t] = evaluator.evaluate(states.index((i, t + 1)), first, scenes[i])
    return DenseRewards(f1 + f2, f1, f2, stage)
