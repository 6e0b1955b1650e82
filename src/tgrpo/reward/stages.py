"""Task stages for the multi-stage dense reward (paper section 3.1), as validated data.

A stage spec is a list of stages per task, e.g. for ``in(alphabet_soup_1, basket_1_contain_region)``:

    approach(alphabet_soup_1) -> grasp(alphabet_soup_1) -> move(alphabet_soup_1 -> basket_1_contain_region)
    -> place(alphabet_soup_1 -> basket_1_contain_region, goal predicate 0)

By default stages are derived from the task's BDDL goal predicates (:func:`stages_from_bddl`), with no
LLM. A spec may also come from outside (an LLM reply, a file): it is parsed from JSON and validated
against the task by :func:`parse_stage_spec`; it is data, never code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tgrpo.envs.libero_env import TaskInfo
from tgrpo.errors import ConfigError

# Stage kinds and the fields each needs.
STAGE_KINDS = {
    "approach": ("object",),  # end-effector to the grasp keypose of the object
    "grasp": ("object",),  # object held and lifted
    "move": ("object", "target"),  # held object carried above the target
    "place": ("object", "target", "predicate"),  # the goal predicate holds
    "actuate": ("joint", "predicate"),  # an articulated part (drawer, door, knob) moved until the predicate holds
}
PICK_PLACE_PREDICATES = ("in", "on")
ACTUATE_PREDICATES = ("open", "close", "turnon", "turnoff")


@dataclass(frozen=True)
class Stage:
    """One stage of a task.

    Attributes:
        kind: one of ``STAGE_KINDS``.
        object: the key object (a ``TaskInfo.object_names`` entry) for approach/grasp/move/place.
        target: the target region or body for move/place.
        joint: the articulated joint (``TaskInfo.articulation_names``) for actuate.
        predicate: index into ``TaskInfo.goal_predicates`` whose truth completes the stage (place/actuate).
    """

    kind: str
    object: str | None = None
    target: str | None = None
    joint: str | None = None
    predicate: int | None = None

    def describe(self) -> str:
        if self.kind in ("approach", "grasp"):
            return f"{self.kind}({self.object})"
        if self.kind in ("move", "place"):
            return f"{self.kind}({self.object} -> {self.target})"
        return f"actuate({self.joint}) until goal {self.predicate}"


def _actuated_joint(task: TaskInfo, name: str) -> str | None:
    """The articulation joint a region or fixture name refers to (drawer regions, stove knobs, doors)."""
    candidates = [j for j in task.articulation_names if j.startswith(name)]
    if not candidates:
        base, _, level = name.rpartition("_region")[0].rpartition("_")  # wooden_cabinet_1_middle_region
        candidates = [j for j in task.articulation_names if j.startswith(base) and level in j]
    if not candidates:
        owner = next((o for o in task.body_names if name.startswith(o)), None)
        candidates = [j for j in task.articulation_names if owner and j.startswith(owner)]
    return candidates[0] if candidates else None


def stages_from_bddl(task: TaskInfo) -> list[Stage]:
    """Derive stages from the BDDL goal: pick-and-place predicates give approach/grasp/move/place,
    open/close/turnon/turnoff give one actuate stage; several predicates are chained in goal order."""
    stages: list[Stage] = []
    for index, pred in enumerate(task.goal_predicates):
        name = pred[0].lower()
        if name in PICK_PLACE_PREDICATES and len(pred) == 3:
            obj, target = pred[1], pred[2]
            stages += [Stage("approach", object=obj), Stage("grasp", object=obj),
                       Stage("move", object=obj, target=target), Stage("place", object=obj, target=target, predicate=index)]
        elif name in ACTUATE_PREDICATES and len(pred) == 2:
            joint = _actuated_joint(task, pred[1])
            if joint is None:
                raise ConfigError(f"task {task.name}: no articulated joint found for goal {pred}; "
                                  f"joints: {', '.join(task.articulation_names) or 'none'}")
            stages.append(Stage("actuate", joint=joint, predicate=index))
        else:
            raise ConfigError(f"task {task.name}: goal predicate {pred} has no stage rule; supported: "
                              f"{', '.join(PICK_PLACE_PREDICATES + ACTUATE_PREDICATES)}")
    return stages


def validate_stages(stages: list[Stage], task: TaskInfo) -> list[Stage]:
    """Check every stage against the task; the error names the stage and the valid values."""
    if not stages:
        raise ConfigError(f"stage spec for {task.name} is empty")
    regions_or_bodies = None
    for i, s in enumerate(stages):
        where = f"stage {i} ({s.kind})"
        if s.kind not in STAGE_KINDS:
            raise ConfigError(f"{where}: unknown kind {s.kind!r}; valid: {', '.join(STAGE_KINDS)}")
        for name in STAGE_KINDS[s.kind]:
            if getattr(s, name) is None:
                raise ConfigError(f"{where}: field {name!r} is required for kind {s.kind!r}")
        if s.object is not None and s.object not in task.body_names:
            raise ConfigError(f"{where}: object {s.object!r} is not in the scene; valid: {', '.join(task.body_names)}")
        if s.joint is not None and s.joint not in task.articulation_names:
            raise ConfigError(f"{where}: joint {s.joint!r} is not in the scene; valid: "
                              f"{', '.join(task.articulation_names) or 'none'}")
        if s.target is not None:
            regions_or_bodies = regions_or_bodies or {a for p in task.goal_predicates for a in p[1:]} | set(task.body_names)
            if s.target not in regions_or_bodies:
                raise ConfigError(f"{where}: target {s.target!r} is neither a body nor a goal region; valid: "
                                  f"{', '.join(sorted(regions_or_bodies))}")
        if s.predicate is not None and not 0 <= s.predicate < len(task.goal_predicates):
            raise ConfigError(f"{where}: predicate index {s.predicate} out of range 0..{len(task.goal_predicates) - 1}")
    return stages


def stages_to_json(stages: list[Stage]) -> str:
    return json.dumps({"stages": [{k: v for k, v in asdict(s).items() if v is not None} for s in stages]}, indent=2)


def parse_stage_spec(text: str, task: TaskInfo) -> list[Stage]:
    """Parse and validate a JSON stage spec ``{"stages": [{"kind": ..., ...}, ...]}`` for ``task``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"stage spec for {task.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
        raise ConfigError(f"stage spec for {task.name} must be an object with a 'stages' list")
    stages = []
    for i, raw in enumerate(data["stages"]):
        if not isinstance(raw, dict):
            raise ConfigError(f"stage {i} of the spec for {task.name} is not an object")
        unknown = set(raw) - {"kind", "object", "target", "joint", "predicate"}
        if unknown:
            raise ConfigError(f"stage {i}: unknown fields {sorted(unknown)}; valid: kind, object, target, joint, predicate")
        pred = raw.get("predicate")
        if pred is not None and (not isinstance(pred, int) or isinstance(pred, bool)):
            raise ConfigError(f"stage {i}: predicate must be an integer index, got {pred!r}")
        stages.append(Stage(**{k: raw.get(k) for k in ("kind", "object", "target", "joint", "predicate")}))
    return validate_stages(stages, task)
