"""Scripted experts that solve LIBERO tasks from privileged simulator state.

An expert turns the task's BDDL goal into a plan of small reusable skills (move above an object, descend,
grasp, lift, carry, place, release, push a plate over the table, open or push shut a drawer, turn a knob,
carry a mug by its handle into a microwave, swing its door) and executes it with proportional control on the
end-effector position and orientation (top-down, pointing into a cabinet for drawers, or tilted for a mug's
handle), clipped to LIBERO's OSC_POSE action range.

Usage (the scene geometry comes from the environment once per episode)::

    env = LiberoEnv(EnvConfig(suite="libero_object", task=0, cameras=()))
    expert = ScriptedExpert(env.task)
    obs = env.reset(seed=0)
    expert.reset(env.scene_geometry())
    while not obs.success:
        obs = env.step(expert.act(obs.state))

Action convention (LIBERO OSC_POSE, 20 Hz): ``a[:3]`` end-effector translation (+-1 = +-5 cm set-point
offset), ``a[3:6]`` axis-angle rotation in the world frame (+-1 = +-0.5 rad), ``a[6]`` gripper, -1 open,
+1 close.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from tgrpo.envs.libero_env import PrivilegedState, SceneGeometry, TaskInfo
from tgrpo.envs.scene import SceneView, box_gap, gripper_opening, segment_box_distance
from tgrpo.errors import ConfigError

OPEN, CLOSE = -1.0, 1.0
POS_GAIN = 12.0  # action units per metre of position error
ROT_GAIN = 2.5  # action units per radian of orientation error
MAX_GRIP_WIDTH = 0.068  # widest object part the fingers close around (max opening 0.08 m)
HAND_HALF_LENGTH = 0.105  # the Panda hand's half length along the fingers' closing direction
FINGER_REACH = 0.03  # deepest grasp below an object's top before the hand hits it
FINGER_DEPTH = 0.03  # half thickness of hand and fingers across the closing direction
HAND_ABOVE = 0.05  # bodies lower than this above the grip site pass under the hand
RIM_WORDS = ("bowl", "mug", "ramekin")  # hollow objects grasped at their rim
RIM_INSET = 0.012  # rim grasp point: this far inside the outer radius (the fingers straddle the wall)
RIM_DEPTH = 0.02  # and this far below the rim
REACH_MIN = 0.4  # reaching down horizontally closer than this to the arm's base folds the arm up: the hand stops short
UNDER_GAP = 0.01  # a lifted object clears an open drawer above it by this much
REST_MOTION = 5e-4  # an object whose origin and up axis move less than this in a step is at rest
OFF_MIDDLE_MAX = 0.02  # grasp an elongated object at most this far off its middle, along its length
OFF_MIDDLE_COST = 0.5  # and count each metre off it as this many metres less clearance
WRIST_LIMIT = 2.8973  # the Panda's last joint (turning the hand about the fingers' axis) stops at +-this
WRIST_MARGIN = 0.3  # keep a grasp's predicted wrist angle this far inside the stop (the prediction is rough)
# Top-down orientation with the fingers closing along world +y (the robot's rest orientation): yaw 0.
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
SUPPORTED = ("in", "on", "open", "close", "turnon")


# -- geometry -----------------------------------------------------------------------------------------


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame axis-angle vector rotating ``current`` onto ``target``."""
    rel = target @ current.T
    angle = np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0))
    axis = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:
        return np.zeros(3) if angle < 1e-3 else np.array([0.0, 0.0, angle])  # 180 deg: turn about z
    return axis / norm * angle


def yaw_of(ee_mat: np.ndarray) -> float:
    """Yaw of a top-down gripper: the angle of its closing direction minus 90 degrees."""
    return float(np.arctan2(ee_mat[1, 0], ee_mat[0, 0]) - np.pi / 2)


def nearest_yaw(closing_angle: float, current_yaw: float) -> float:
    """Yaw closing the fingers along ``closing_angle`` (mod pi: the gripper is symmetric), nearest current."""
    yaw = closing_angle - np.pi / 2
    return float(yaw + np.pi * np.round((current_yaw - yaw) / np.pi))


# -- skills -------------------------------------------------------------------------------------------


class Skill:
    """One step of a plan: ``act`` returns an action, or ``None`` once the skill is finished."""

    def act(self, view: SceneView) -> np.ndarray | None:
        raise NotImplementedError


def servo(view: SceneView, target: np.ndarray, yaw: float, grip: float,
          orient: np.ndarray | None = None) -> np.ndarray:
    """Proportional control of the end effector towards ``target`` with a top-down gripper at ``yaw``.

    ``orient`` (a grip-site rotation matrix, e.g. from ``front_orientation``) replaces the top-down one.
    """
    action = np.zeros(7)
    action[:3] = np.clip(POS_GAIN * (target - view.ee), -1.0, 1.0)
    goal = rot_z(yaw) @ DOWN if orient is None else orient
    action[3:6] = np.clip(ROT_GAIN * rotation_error(goal, view.state.ee_mat), -1.0, 1.0)
    action[6] = grip
    return action


def front_orientation(approach: np.ndarray, closing: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Grip-site rotation with the fingers pointing along ``approach`` and closing along +-``closing``.

    Of the two signs of the (symmetric) closing direction, the one nearer the ``current`` rotation.
    """
    candidates = []
    for sign in (1.0, -1.0):
        col0, col2 = sign * closing, approach
        candidates.append(np.stack([col0, np.cross(col2, col0), col2], axis=1))
    return min(candidates, key=lambda r: float(np.linalg.norm(rotation_error(r, current))))


Target = Callable[[SceneView], np.ndarray]


@dataclass
class MoveTo(Skill):
    """Servo the end effector to a (possibly moving) target until within ``tol`` or ``max_steps`` pass."""

    target: Target
    yaw: float
    grip: float
    tol: float = 0.01
    max_steps: int = 60
    orient: np.ndarray | None = None  # a full grip-site rotation instead of top-down at ``yaw``
    steps: int = 0

    def act(self, view: SceneView) -> np.ndarray | None:
        goal = self.target(view)
        if self.orient is None:
            rot_err = abs(rotation_error(rot_z(self.yaw) @ DOWN, view.state.ee_mat)[2])
        else:
            rot_err = float(np.linalg.norm(rotation_error(self.orient, view.state.ee_mat)))
        if self.steps >= self.max_steps or (np.linalg.norm(goal - view.ee) < self.tol and rot_err < 0.15):
            return None
        self.steps += 1
        return servo(view, goal, self.yaw, self.grip, self.orient)


@dataclass
class Hold(Skill):
    """Keep the end effector where it is, with the gripper at ``grip``, for ``steps`` steps."""

    grip: float
    yaw: float
    steps: int
    anchor: np.ndarray | None = None
    orient: np.ndarray | None = None

    def act(self, view: SceneView) -> np.ndarray | None:
        if self.anchor is None:
            self.anchor = view.ee.copy()
        if self.steps <= 0:
            return None
        self.steps -= 1
        return servo(view, self.anchor, self.yaw, self.grip, self.orient)


@dataclass
class CloseGripper(Skill):
    """Close the fingers in place until they stop moving (on the object, or shut on nothing)."""

    yaw: float
    min_steps: int = 4
    max_steps: int = 25
    orient: np.ndarray | None = None
    steps: int = 0
    anchor: np.ndarray | None = None
    last_opening: float = np.inf

    def act(self, view: SceneView) -> np.ndarray | None:
        if self.anchor is None:
            self.anchor = view.ee.copy()
        opening = gripper_opening(view.state)
        settled = self.steps >= self.min_steps and abs(self.last_opening - opening) < 5e-4
        if settled or self.steps >= self.max_steps:
            return None
        self.steps += 1
        self.last_opening = opening
        return servo(view, self.anchor, self.yaw, CLOSE, self.orient)


@dataclass
class AtRest(Skill):
    """Hold the hand still with the gripper open until the scene's objects have come to rest (at most
    ``max_steps``).

    An object can still be moving when a grasp is planned: a bowl tipping off a ramekin after the settle steps,
    or one that a failed grasp dropped. A grasp planned then aims where the object no longer is. The other
    objects matter too: the travel height over them is planned with the grasp, and a seeded placement can leave
    some still falling onto the table (libero_10 1: boxes 0.4-0.55 m above it after the settle steps); planned
    over them in the air, the hand rose to the edge of the arm's reach.
    """

    max_steps: int = 30
    hold: Hold | None = None
    last: np.ndarray | None = None

    def act(self, view: SceneView) -> np.ndarray | None:
        pose = np.concatenate([np.concatenate([view.pos(o), view.rot(o)[:, 2]]) for o in view.task.object_names])
        moving = self.last is None or float(np.max(np.abs(pose - self.last))) > REST_MOTION
        self.last = pose
        if self.hold is None:
            self.hold = Hold(OPEN, yaw_of(view.state.ee_mat), self.max_steps)
        return self.hold.act(view) if moving else None


@dataclass
class Chain(Skill):
    """Run skills one after the other."""

    skills: list[Skill]

    def act(self, view: SceneView) -> np.ndarray | None:
        while self.skills:
            action = self.skills[0].act(view)
            if action is not None:
                return action
            self.skills.pop(0)
        return None


@dataclass
class Until(Skill):
    """Run ``skill`` until ``done`` holds (or the skill ends by itself)."""

    skill: Skill
    done: Callable[[SceneView], bool]

    def act(self, view: SceneView) -> np.ndarray | None:
        return None if self.done(view) else self.skill.act(view)


@dataclass
class Planned(Skill):
    """Build a skill from the state at the moment it starts; rebuild it while ``succeeded`` says no."""

    build: Callable[[SceneView], Skill]
    succeeded: Callable[[SceneView], bool] = lambda view: True
    attempts: int = 3
    current: Skill | None = None

    def act(self, view: SceneView) -> np.ndarray | None:
        while True:
            if self.current is None:
                if self.attempts <= 0:
                    return None
                self.attempts -= 1
                self.current = self.build(view)
            action = self.current.act(view)
            if action is not None:
                return action
            if self.succeeded(view):
                return None
            self.current = None


# -- pick and place -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grasp:
    """Where and how to grasp an object: grip-site offset from the object origin (world) and yaw."""

    offset: np.ndarray
    yaw: float
    orient: np.ndarray | None = None  # a full grip-site rotation instead of top-down at ``yaw``


def grasp_candidates(view: SceneView, obj: str) -> list[tuple[float, np.ndarray, float, float, float]]:
    """Top-down grasps of ``obj`` as (score, grip xy, closing angle, grip z, clearance of hand and fingers).

    Narrow objects are grasped across their body, at its middle or, if elongated, up to ``OFF_MIDDLE_MAX``
    off it along its length; wide or hollow ones (bowls, mugs) at the rim, with the fingers closing radially
    across the wall. The score prefers clearance from the neighbours (and open drawers), then grasps the
    gripper can close around and near the middle, or for rims the side facing the robot (-x); the far side if
    the one facing it lies within ``REACH_MIN`` of the arm's base (a bowl on the stove).
    """
    box = view.box(obj)
    height = box[1, 2] - box[0, 2]
    centre = box.mean(0)
    rim = any(w in obj for w in RIM_WORDS)
    near = float(np.linalg.norm(centre[:2] - view.geometry.robot_base[:2])) - outer_radius(view, obj)
    side = -1.0 if near >= REACH_MIN else 1.0  # x direction of the preferred rim side
    length, shifts = (None, []) if rim else grasp_shifts(view, obj)
    candidates = []
    for angle in np.deg2rad(np.arange(0.0, 360.0, 15.0)):
        d = np.array([np.cos(angle), np.sin(angle)])
        if rim:
            point3 = rim_point(view, obj, d)
            z, span = point3[2], 0.03
            points = [(point3[:2], 0.01 * side * d[0])]  # (grip xy, preference)
        else:
            if angle >= np.pi:
                continue  # the gripper is symmetric
            width = view.width_along(obj, d)
            z, span = box[0, 2] + max(0.5 * height, height - FINGER_REACH), width / 2 + 0.015
            wide = max(width - MAX_GRIP_WIDTH, 0.0) * 10
            points = [(centre[:2] + shift * length, -wide - OFF_MIDDLE_COST * abs(shift)) for shift in shifts]
        for point, preference in points:
            clearance = grasp_clearance(view, obj, point, d, z, span)
            candidates.append((min(clearance, 0.05) + preference, point, float(angle), float(z), clearance))
    return candidates


def grasp_shifts(view: SceneView, obj: str) -> tuple[np.ndarray, list[float]]:
    """Horizontal unit direction of an elongated object's length, and the shifts of grasp points along it.

    Up to half the difference of its length and width (at most ``OFF_MIDDLE_MAX``) off the middle: a flat box
    (butter, cream cheese) lying between tall cartons leaves room for the hand only off its middle. None for
    round or square objects, or a tilted one.
    """
    lo, hi = view.geometry.bounds[obj]
    rot = view.rot(obj)
    flat = [i for i in range(3) if abs(rot[2, i]) < 0.1]  # the box's horizontal axes
    if len(flat) != 2:
        return np.zeros(2), [0.0]
    across, along = sorted(flat, key=lambda i: hi[i] - lo[i])
    slack = min(0.5 * float((hi - lo)[along] - (hi - lo)[across]), OFF_MIDDLE_MAX)
    if slack < 0.005:
        return np.zeros(2), [0.0]
    return unit(rot[:2, along]), [float(s) for s in np.linspace(-slack, slack, 5)]


def plan_grasp(view: SceneView, obj: str) -> Grasp:
    """Choose the best-scored of ``grasp_candidates``."""
    _, point, angle, z, _ = max(grasp_candidates(view, obj), key=lambda c: c[0])
    grip = np.array([point[0], point[1], z])
    return Grasp(grip - view.pos(obj), grasp_yaw(view, angle, grip[:2]))


def wrist_angle(view: SceneView, yaw: float, xy: np.ndarray) -> float:
    """Predicted angle of the wrist joint with a top-down hand at ``yaw`` above ``xy``.

    The wrist turns against the hand's yaw, and along with the arm as it swings about its base; the other joints
    move it too (in libero_10 4 it ended 0.1 rad below to 0.2 rad above the prediction).
    """
    bearing = lambda p: float(np.arctan2(*(p - view.geometry.robot_base[:2])[::-1]))  # noqa: E731
    turn = yaw - yaw_of(view.state.ee_mat)
    return float(view.state.joint_pos[6]) - turn + bearing(xy) - bearing(view.ee[:2])


def grasp_yaw(view: SceneView, closing_angle: float, xy: np.ndarray) -> float:
    """Yaw closing the fingers along ``closing_angle`` above ``xy``: the one nearest the current yaw, or the
    other (half a turn away; the gripper is symmetric) if that one takes the wrist within ``WRIST_MARGIN`` of
    its stop.

    At the stop the hand cannot reach the yaw, and the arm, straining for it, stalls short of its target too:
    libero_10 4's second mug, taken after the first was grasped at yaw -90 degrees (its wrist then at 1.7 of the
    2.9 rad), needed another 30-75 degrees further that way, and the hand stopped 6 cm from the mug and knocked it.
    """
    current = yaw_of(view.state.ee_mat)
    near = nearest_yaw(closing_angle, current)
    other = near + np.pi if near < current else near - np.pi
    wrist = abs(wrist_angle(view, near, xy))
    return other if wrist > WRIST_LIMIT - WRIST_MARGIN and abs(wrist_angle(view, other, xy)) < wrist else near


def rim_point(view: SceneView, obj: str, direction: np.ndarray) -> np.ndarray:
    """Grasp point on the wall of a hollow object, towards the horizontal ``direction``, just below its rim.

    Computed in the object's frame so that a tilted bowl is grasped where its rim actually is.
    """
    lo, hi = view.geometry.bounds[obj]
    rot = view.rot(obj)
    local_dir = unit((rot.T @ np.array([*direction, 0.0]))[:2])
    radius = 0.5 * float(np.min(hi[:2] - lo[:2])) - RIM_INSET
    local = np.array([*((lo[:2] + hi[:2]) / 2 + radius * local_dir), hi[2] - min(RIM_DEPTH, 0.5 * (hi[2] - lo[2]))])
    return view.pos(obj) + rot @ local


def grasp_clearance(view: SceneView, obj: str, point: np.ndarray, d: np.ndarray, z: float, span: float) -> float:
    """Horizontal clearance of the fingers (and, for tall neighbours, the hand) around a grasp point."""
    clearance = np.inf
    for box in [*map(view.box, view.others(obj)), *drawer_boxes(view, obj)]:
        if box[1, 2] < z - 0.005:
            continue  # below the fingertips
        half = HAND_HALF_LENGTH if box[1, 2] > z + HAND_ABOVE else span
        dist = segment_box_distance(point - half * d, point + half * d, box[:, :2]) - FINGER_DEPTH
        clearance = min(clearance, dist)
    return clearance


def drawer_boxes(view: SceneView, obj: str) -> list[np.ndarray]:
    """World boxes of the drawers pulled out of their cabinet, except one holding ``obj``.

    A drawer pulled open sticks out of its cabinet's (static) box, over whatever stands in front of it.
    """
    joints = dict.fromkeys(j for region in view.geometry.regions.values() for j in region.joints)
    centre = view.centre(obj)
    boxes = [view.part_box(j) for j in joints if j in view.geometry.parts and abs(view.qpos(j)) > DRAWER_OUT]
    return [b for b in boxes if not np.all((b[0] <= centre) & (centre <= b[1]))]


def out_from_under(view: SceneView, obj: str) -> np.ndarray:
    """Horizontal shift taking the round ``obj`` ``UNDER_GAP`` out from under the open drawers above it.

    A bowl dragged out from under a drawer about to open can still reach under its edge: lifted straight up,
    its rim catches there and the bowl is pulled out of the fingers.
    """
    shift = np.zeros(2)
    for box in drawer_boxes(view, obj):
        if box[0, 2] < view.box(obj)[1, 2]:
            continue  # not above the object
        centre = view.centre(obj)[:2] + shift
        away = centre - np.clip(centre, box[0, :2], box[1, :2])
        under = UNDER_GAP + outer_radius(view, obj) - float(np.linalg.norm(away))
        shift += unit(away) * max(under, 0.0)
    return shift


def pick(obj: str, plan: Callable[[SceneView, str], Grasp] = plan_grasp) -> Skill:
    """Wait for the objects to rest, approach from above, descend, close the fingers and lift 4 cm from there
    (sideways out from under an open drawer); retried if the object stays down.

    The lift is measured from where the descent stopped (up to 8 mm above the grasp point): measured from the
    grasp point, it ended 2.5 cm above where the fingers closed, and a mug turning in them rose just under the
    2 cm that count as lifted; the hand let it go and tried again (libero_10 4).

    ``plan`` chooses the grasp (top-down by default; ``handle_grasp`` tilts the hand) once the objects are at rest.
    """
    start: dict[str, float] = {}

    def build(view: SceneView) -> Skill:
        start["z"] = float(view.pos(obj)[2])
        grasp = plan(view, obj)
        yaw, orient = grasp.yaw, grasp.orient
        at = lambda v: v.pos(obj) + grasp.offset  # noqa: E731 - follows the object if it is nudged
        travel = max(view.clear_height(view.ee, at(view), [obj]), float(at(view)[2])) + 0.08
        above = lambda v: np.array([*at(v)[:2], travel])  # noqa: E731
        lift = np.array([*out_from_under(view, obj), 0.04])
        close = CloseGripper(yaw, orient=orient)  # its anchor: where the descent stopped (up to 8 mm above ``at``)
        return Chain([
            MoveTo(lambda v: np.array([*v.ee[:2], max(v.ee[2], travel)]), yaw, OPEN, tol=0.02, orient=orient),
            MoveTo(above, yaw, OPEN, tol=0.015, orient=orient),
            MoveTo(at, yaw, OPEN, tol=0.008, max_steps=40, orient=orient),
            close,
            MoveTo(lambda v: close.anchor + lift, yaw, CLOSE, tol=0.01, max_steps=15, orient=orient),
        ])

    def lifted(view: SceneView) -> bool:
        return float(view.pos(obj)[2]) > start["z"] + 0.02 and gripper_opening(view.state) > 0.004

    return Planned(lambda view: Chain([AtRest(), Planned(build, attempts=1)]), lifted)


def place(obj: str, goal: Callable[[SceneView], np.ndarray]) -> Skill:
    """Carry the held ``obj`` high enough over everything on the way, lower it onto ``goal``, release.

    ``goal`` gives the object's target xy and the height of its bottom at release.
    """

    def build(view: SceneView) -> Skill:
        yaw = yaw_of(view.state.ee_mat)
        release, travel = carry(view, obj, goal)
        return Chain([
            MoveTo(lambda v: np.array([*v.ee[:2], travel]), yaw, CLOSE, tol=0.02),
            MoveTo(lambda v: np.array([*release(v)[:2], travel]), yaw, CLOSE, tol=0.015, max_steps=80),
            MoveTo(release, yaw, CLOSE, tol=0.01, max_steps=40),
            Hold(OPEN, yaw, steps=6),
            MoveTo(lambda v: v.ee + [0.0, 0.0, 0.05], yaw, OPEN, tol=0.02, max_steps=8),
        ])

    return Planned(build)


def carry(view: SceneView, obj: str, goal: Callable[[SceneView], np.ndarray]) -> tuple[Target, float]:
    """Where the grip site releases the held ``obj`` at ``goal`` (see ``place``), and a travel height over
    everything on the way there."""
    drop = view.ee[2] - view.box(obj)[0, 2]  # how far the object hangs below the grip site
    bottom = view.pos(obj)[2] - view.box(obj)[0, 2]  # object origin above its bottom
    release = lambda v: v.ee + (goal(v) + [0.0, 0.0, bottom] - v.pos(obj))  # noqa: E731
    target = release(view)
    path_top = view.clear_height(view.ee, target, [obj], margin=0.06)
    return release, max(path_top + drop + 0.03, target[2] + 0.06, view.ee[2])


def goal_on_body(obj: str, target: str) -> Callable[[SceneView], np.ndarray]:
    """Object origin goal for ``on(obj, target)``: centred over the body, bottom just above its top."""
    return lambda v: np.array([*v.centre(target)[:2], v.box(target)[1, 2] + 0.012])


def goal_in_region(obj: str, region: str, on_top: bool,
                   sharing: tuple[str, ...] = ()) -> Callable[[SceneView], np.ndarray]:
    """Object origin goal for a region: inside it (``in``) or resting on what lies under it (``on``).

    At the region's centre, or in ``obj``'s slot when several objects go into it (``region_slot``).
    """

    def goal(v: SceneView) -> np.ndarray:
        centre = v.region_centre(region)
        half = v.geometry.regions[region].half_size
        xy = region_slot(v, obj, region, sharing) if len(sharing) > 1 else centre[:2]
        if on_top:
            z = max(centre[2] + half[2], v.surface_height(xy, [obj])) + 0.015
        else:
            z = max(centre[2] - half[2], v.surface_height(xy, [obj]) if half[2] < 0.01 else -np.inf) + 0.02
        return np.array([xy[0], xy[1], z])

    return goal


SLOT_GAP = 0.02  # objects sharing a region stand this far apart
SLOT_INSET = 0.01  # with their origins at least this far inside the region


def region_slot(view: SceneView, obj: str, region: str, sharing: tuple[str, ...]) -> np.ndarray:
    """Origin xy of ``obj`` in ``region``, which the objects ``sharing`` (in the order they are placed) go into.

    Side by side, ``SLOT_GAP`` apart, along the region's horizontal axis that leaves the most room (from their
    boxes as they stand, keeping their yaw when carried), the row centred on the region; and clear of the
    objects placed before by that gap wherever they actually ended. Across the row, the origins are centred.
    """
    centre = view.region_centre(region)[:2]
    half = np.maximum(view.geometry.regions[region].half_size[:2] - SLOT_INSET, 0.0)
    boxes = np.array([view.box(o)[:, :2] for o in sharing])
    widths = boxes[:, 1] - boxes[:, 0]
    axis = int(np.argmin(widths.sum(0) - 2.0 * half))
    i = sharing.index(obj)
    row = widths[:, axis].sum() + SLOT_GAP * (len(sharing) - 1)
    low = centre[axis] - 0.5 * row + widths[:i, axis].sum() + SLOT_GAP * i  # low edge of obj's box
    placed = [j for j in range(i) if np.all(np.abs(view.pos(sharing[j])[:2] - centre) < half + SLOT_INSET)]
    low = max([low, *(boxes[placed, 1, axis] + SLOT_GAP)])
    origin = view.pos(obj)[:2] - boxes[i].mean(0)  # origin from the box's middle
    xy = centre.copy()
    xy[axis] = low + 0.5 * widths[i, axis] + origin[axis]
    return np.clip(xy, centre - half, centre + half)


# -- dragging and pushing over the table -------------------------------------------------------------------

PUSH_GRIP = 0.3  # pushing: closed fingertips this fraction of the object's half width out from its centre
PUSH_DEPTH = 0.015  # and this far below its rim, but
PUSH_HEIGHT = 0.012  # at least this far above its bottom (the closed fingertips just clear the table)
PUSH_AHEAD = 0.03  # servo the fingertips this far ahead of where they are (sets the pushing speed)
PUSH_PAST = 0.05  # steer the object at a point this far beyond its waypoint
PUSH_TOL = 0.01  # a push leg ends this close to its waypoint
PUSH_GOAL_INSET = 0.015  # push the object's origin at least this far inside the goal region
PUSH_CORNERS = 0.03  # spacing of the candidate corners of a push path
PUSH_BEYOND = 0.03  # corners at most this much farther from the robot (+x) than start and goal: its reach


def half_width(view: SceneView, obj: str) -> float:
    """Half the smaller horizontal extent of ``obj``'s box."""
    box = view.box(obj)
    return 0.5 * float(np.min(box[1, :2] - box[0, :2]))


def outer_radius(view: SceneView, obj: str) -> float:
    """Half the larger horizontal extent of ``obj``'s box: the radius of a round object."""
    box = view.box(obj)
    return 0.5 * float(np.max(box[1, :2] - box[0, :2]))


def drag(view: SceneView, obj: str, start: np.ndarray, yaw: float, towards: Target,
         done: Callable[[SceneView], bool], max_steps: int) -> Chain:
    """Lower the closed fingertips from above to ``start`` inside the hollow ``obj``, servo them to ``towards``
    (moving the object along by its wall) until ``done``, lift them out."""
    travel = view.clear_height(view.ee, start, [obj]) + 0.04
    return Chain([
        MoveTo(lambda v: np.array([*start[:2], travel]), yaw, CLOSE, tol=0.03),
        MoveTo(lambda v: start, yaw, CLOSE, tol=0.01, max_steps=30),
        Until(MoveTo(towards, yaw, CLOSE, tol=0.0, max_steps=max_steps), done),
        MoveTo(lambda v: v.ee + [0.0, 0.0, 0.05], yaw, OPEN, tol=0.02, max_steps=6),
    ])


def too_wide(geometry: SceneGeometry, obj: str) -> bool:
    """Whether ``obj`` is wider than the gripper opens in every direction and has no rim to grasp (a plate)."""
    lo, hi = geometry.bounds[obj]
    return not any(w in obj for w in RIM_WORDS) and float(np.min(hi[:2] - lo[:2])) > MAX_GRIP_WIDTH


def push_grip(view: SceneView, obj: str, u: np.ndarray) -> np.ndarray:
    """Where the closed fingertips push the hollow ``obj`` along ``u``: inside it, at the foot of its wall.

    Near the centre: pressing on a plate's wide sloped rim farther out tips the plate over its narrow base.
    """
    box = view.box(obj)
    z = max(box[1, 2] - PUSH_DEPTH, box[0, 2] + PUSH_HEIGHT)
    return np.array([*(box.mean(0)[:2] + PUSH_GRIP * half_width(view, obj) * u), z])


def leg_clearance(a: np.ndarray, b: np.ndarray, radius: float, grip: float, closing: np.ndarray,
                  boxes: np.ndarray, tall: np.ndarray) -> float:
    """Clearance of one leg of a push from the boxes of the other bodies.

    The object (a disc of ``radius``) slides from ``a`` to ``b`` past ``boxes``; the hand, ``grip`` ahead of
    its centre and as long as the fingers' ``closing`` direction, passes over all but the ``tall`` ones.
    """
    u = unit(b - a)
    centres = a + np.linspace(0.0, 1.0, int(np.linalg.norm(b - a) / 0.01) + 2)[:, None] * (b - a)
    hand = np.linspace(-HAND_HALF_LENGTH, HAND_HALF_LENGTH, 7)[:, None] * closing
    return min(box_gap(centres, boxes) - radius, box_gap(centres[:, None] + grip * u + hand, tall) - FINGER_DEPTH)


def push_path(view: SceneView, obj: str, region: str) -> list[np.ndarray]:
    """Waypoints of ``obj``'s origin for a push into ``region``: straight there, or through one corner.

    Of goals spread over the region and corners on a grid around start and goal (hardly farther from the
    robot), the path keeping the object and the hand clearest of the other bodies, up to 1 cm; then the
    shortest.
    """
    start = view.pos(obj)[:2]
    centre = view.region_centre(region)[:2]
    inset = np.maximum(view.geometry.regions[region].half_size[:2] - PUSH_GOAL_INSET, 0.0)
    goals = [centre + inset * [i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)]
    lo, hi = np.minimum(start, centre) - 0.1, np.maximum(start, centre) + [PUSH_BEYOND, 0.1]
    corners = [np.array([x, y]) for x in np.arange(lo[0], hi[0], PUSH_CORNERS)
               for y in np.arange(lo[1], hi[1], PUSH_CORNERS)]

    radius = outer_radius(view, obj)
    grip, closing = PUSH_GRIP * half_width(view, obj), view.state.ee_mat[:2, 0]
    others = [view.box(b) for b in view.others(obj)]
    hand_z = push_grip(view, obj, np.zeros(2))[2] + HAND_ABOVE
    boxes, tall = np.array([b[:, :2] for b in others]), np.array([b[:, :2] for b in others if b[1, 2] > hand_z])
    legs: dict[tuple[float, ...], float] = {}  # clearance of each leg, shared by the paths

    def score(path: list[np.ndarray]) -> float:
        for a, b in zip(path, path[1:]):
            legs.setdefault((*a, *b), leg_clearance(a, b, radius, grip, closing, boxes, tall))
        clearance = min(legs[(*a, *b)] for a, b in zip(path, path[1:]))
        length = sum(float(np.linalg.norm(b - a)) for a, b in zip(path, path[1:]))
        return min(clearance, 0.01) - 0.02 * length

    paths = [[start, *via, goal] for goal in goals for via in ([], *([c] for c in corners))]
    return max(paths, key=score)[1:]


def push_leg(obj: str, waypoint: np.ndarray) -> Skill:
    """Push the hollow ``obj`` from inside until its origin is at ``waypoint`` (or the fingertips slip out).

    The fingertips move ahead at a steady pace and are steered sideways onto the line from the object's centre
    to a point just beyond the waypoint, which brings an object sliding off course back. The wrist keeps its
    yaw: turning it out at the arm's reach strains the arm to its joint limits.
    """

    def build(view: SceneView) -> Skill:
        u = unit(waypoint - view.pos(obj)[:2])
        start = push_grip(view, obj, u)
        remaining = lambda v: float((waypoint - v.pos(obj)[:2]) @ u)  # noqa: E731

        def towards(v: SceneView) -> np.ndarray:
            heading = unit(waypoint + PUSH_PAST * u - v.pos(obj)[:2])
            off_line = push_grip(v, obj, heading)[:2] - v.ee[:2]
            off_line -= (off_line @ heading) * heading
            ahead = np.clip(remaining(v), 0.005, PUSH_AHEAD) * heading
            return np.array([*(v.ee[:2] + ahead + off_line), start[2]])  # start's height: a tilted box rises

        def done(v: SceneView) -> bool:
            slipped = np.linalg.norm(v.ee[:2] - v.centre(obj)[:2]) > 0.8 * half_width(v, obj)
            return remaining(v) < PUSH_TOL or bool(slipped)

        return drag(view, obj, start, yaw_of(view.state.ee_mat), towards, done, max_steps=150)

    return Planned(build, attempts=1)


def push(obj: str, region: str) -> Skill:
    """Slide ``obj`` (too wide to grasp, hollow like a plate) over the table into the table ``region``.

    Leg by leg along ``push_path``; planned again from where the object is if it is not inside after that.
    """

    def build(view: SceneView) -> Skill:
        return Chain([push_leg(obj, waypoint) for waypoint in push_path(view, obj, region)])

    def inside(view: SceneView) -> bool:
        offset = view.pos(obj)[:2] - view.region_centre(region)[:2]
        return bool(np.all(np.abs(offset) < view.geometry.regions[region].half_size[:2]))

    return Planned(build, inside, attempts=3)


# -- articulated fixtures -------------------------------------------------------------------------------


DRAWER_OUT = 0.02  # a drawer further than this from its closed position sticks out of its cabinet
CLEAR_MAX = 0.07  # drag an object at most this far out from under a drawer about to open
DRAWER_REACH = 0.006  # grip site this far behind the front face of a drawer's handle bar (~1.5 cm deep)
DRAWER_STANDOFF = 0.12  # approach and leave a drawer's front from this far out along its slide
PUSH_TILT = np.deg2rad(45.0)  # pushing a drawer shut: fingers tilted this far from vertical towards the cabinet


def slide_direction(view: SceneView, joint: str) -> np.ndarray:
    """Horizontal unit vector along which the drawer of ``joint`` opens (LIBERO's cabinets: negative qpos)."""
    return unit(-view.geometry.parts[joint].axis * np.array([1.0, 1.0, 0.0]))


def drawer_front(view: SceneView, joint: str, pull: np.ndarray) -> np.ndarray:
    """Middle of the drawer's foremost face along ``pull`` (the handle bar's front), at mid height."""
    box = view.part_box(joint)
    return box.mean(0) + pull * 0.5 * float(np.abs(box[1] - box[0]) @ np.abs(pull))


def front_approach(standoff: Target, orient: np.ndarray, yaw: float, grip: float, travel: float) -> list[Skill]:
    """Turn the gripper to ``orient`` at ``travel`` height, then come down in front of the drawer at ``standoff``.

    Top-down, the hand (0.21 m long across the fingers) collides with the cabinet's front above the handle,
    so drawers are handled from the front with the fingers pointing into the cabinet.
    """
    return [
        MoveTo(lambda v: np.array([*standoff(v)[:2], travel]), yaw, grip, tol=0.04, max_steps=80, orient=orient),
        MoveTo(standoff, yaw, grip, tol=0.03, max_steps=60, orient=orient),
    ]


def front_leave(pull: np.ndarray, orient: np.ndarray, grip: float, home: np.ndarray) -> list[Skill]:
    """Back off from the drawer along ``pull``, rise to ``home``'s height, turn top-down halfway back to ``home``.

    The drawer's front is near the arm's reach: turning the wrist there strains the arm to its limits. The
    wrist turns about its horizontal axis only (to the top-down yaw nearest ``orient``).
    """
    closing = np.cross(orient[:, 1], [0.0, 0.0, -1.0])
    yaw = float(np.arctan2(closing[1], closing[0]) - np.pi / 2)
    back: dict[str, np.ndarray] = {}

    def away(v: SceneView) -> np.ndarray:
        back.setdefault("at", v.ee + DRAWER_STANDOFF * 0.7 * pull)
        return back["at"]

    up = lambda v: np.array([*away(v)[:2], home[2]])  # noqa: E731
    return [
        MoveTo(away, yaw, grip, tol=0.03, max_steps=25, orient=orient),
        MoveTo(up, yaw, grip, tol=0.04, max_steps=60, orient=orient),
        MoveTo(lambda v: 0.5 * (up(v) + home), yaw, grip, tol=0.02, max_steps=40, orient=rot_z(yaw) @ DOWN),
    ]


def best_clearance(view: SceneView, obj: str) -> float:
    """Clearance of the roomiest top-down grasp of ``obj``."""
    return max(c[4] for c in grasp_candidates(view, obj))


def imagined(view: SceneView, obj: str, shift: np.ndarray, joint: str, qpos: float) -> SceneView:
    """``view`` with ``obj`` moved by the horizontal ``shift`` and the joint at ``qpos``."""
    state = view.state
    object_pos = state.object_pos.copy()
    object_pos[view.task.body_names.index(obj), :2] += shift
    joint_qpos = state.articulation_qpos.copy()
    joint_qpos[view.task.articulation_names.index(joint)] = qpos
    return SceneView(view.task, view.geometry, replace(state, object_pos=object_pos, articulation_qpos=joint_qpos))


def body_gap(view: SceneView, obj: str) -> float:
    """Smallest horizontal gap between the round (hollow) ``obj`` and the boxes of the other bodies."""
    boxes = np.array([view.box(b)[:, :2] for b in view.others(obj)])
    return box_gap(view.box(obj).mean(0)[:2], boxes) - outer_radius(view, obj)


def clearing_shift(view: SceneView, obj: str, joint: str, open_qpos: float) -> np.ndarray:
    """Smallest horizontal shift of ``obj`` after which the drawer, once open, leaves room to grasp it.

    Zero when the open drawer takes no grasp away (or no shift of up to ``CLEAR_MAX`` helps).
    """
    want = min(best_clearance(view, obj), 0.0) + 0.008
    if best_clearance(imagined(view, obj, np.zeros(2), joint, open_qpos), obj) >= want - 0.005:
        return np.zeros(2)
    gap = min(body_gap(view, obj), 0.005)
    for dist in np.arange(0.01, CLEAR_MAX + 1e-9, 0.005):
        for angle in np.deg2rad(np.arange(0.0, 360.0, 15.0)):
            shift = dist * np.array([np.cos(angle), np.sin(angle)])
            moved = imagined(view, obj, shift, joint, open_qpos)
            if best_clearance(moved, obj) >= want and body_gap(moved, obj) >= gap:
                return shift
    return np.zeros(2)


def clear_from_drawer(obj: str, joint: str, open_qpos: float) -> Skill:
    """Before a drawer is opened over ``obj``, drag the object out from under it (hollow objects only).

    The closed fingertips are lowered inside the object next to its wall on the far side and pulled along;
    skipped when the drawer is already out or leaves enough room to grasp the object from above.
    """

    def build(view: SceneView) -> Skill:
        if abs(view.qpos(joint)) > DRAWER_OUT or not any(w in obj for w in RIM_WORDS):
            return Chain([])
        shift = clearing_shift(view, obj, joint, open_qpos)
        dist = float(np.linalg.norm(shift))
        if dist == 0.0:
            return Chain([])
        u = shift / dist
        box = view.box(obj)
        inset = half_width(view, obj) - 0.025  # fingertips this far out from the centre
        start = np.array([*(box.mean(0)[:2] + inset * u), box[1, 2] - 0.015])
        origin = view.pos(obj).copy()
        moved = lambda v: float((v.pos(obj) - origin)[:2] @ u) >= dist  # noqa: E731
        yaw = nearest_yaw(float(np.arctan2(u[1], u[0])), yaw_of(view.state.ee_mat))
        return drag(view, obj, start, yaw, lambda v: np.array([*(v.ee[:2] + 0.08 * u), start[2]]), moved,
                    max_steps=30)

    return Planned(build, attempts=1)


def open_drawer(joint: str, threshold: float) -> Skill:
    """Grasp the drawer's handle bar from the front (fingers closing vertically) and pull it open.

    Skipped when the drawer is already open.
    """

    def build(view: SceneView) -> Skill:
        if view.qpos(joint) < threshold:
            return Chain([])
        pull = slide_direction(view, joint)
        orient = front_orientation(-pull, np.array([0.0, 0.0, 1.0]), view.state.ee_mat)
        yaw = yaw_of(view.state.ee_mat)
        grip_at = lambda v: drawer_front(v, joint, pull) - DRAWER_REACH * pull  # noqa: E731 - follows the slide
        travel = max(view.ee[2], view.part_box(joint)[1, 2] + 0.1)
        opened = lambda v: v.qpos(joint) < threshold - 0.01  # noqa: E731
        return Chain([
            *front_approach(lambda v: grip_at(v) + DRAWER_STANDOFF * pull, orient, yaw, OPEN, travel),
            MoveTo(grip_at, yaw, OPEN, tol=0.01, max_steps=40, orient=orient),
            CloseGripper(yaw, orient=orient),
            Until(MoveTo(lambda v: grip_at(v) + 0.06 * pull, yaw, CLOSE, tol=0.0, max_steps=80, orient=orient),
                  opened),
            Hold(OPEN, yaw, steps=3, orient=orient),
            *front_leave(pull, orient, OPEN, np.array([*view.ee[:2], travel])),
        ])

    return Planned(build, lambda v: v.qpos(joint) < threshold)


def close_drawer(joint: str, threshold: float) -> Skill:
    """Push the drawer shut at its handle with the closed fingertips, the fingers tilted towards the cabinet.

    The fingers close sideways and point down into the cabinet at ``PUSH_TILT``: pointing straight in, the
    wrist twists to its limits; closing vertically, the hand would reach below the table in front of a
    bottom drawer; top-down, it would hit the front of the drawer above. Skipped when already closed.
    """

    def build(view: SceneView) -> Skill:
        if view.qpos(joint) > threshold:
            return Chain([])
        pull = slide_direction(view, joint)
        side = np.cross([0.0, 0.0, 1.0], pull)
        approach = -pull * np.sin(PUSH_TILT) - np.array([0.0, 0.0, 1.0]) * np.cos(PUSH_TILT)
        orient = front_orientation(approach, side, view.state.ee_mat)
        yaw = yaw_of(view.state.ee_mat)
        front = lambda v: drawer_front(v, joint, pull)  # noqa: E731
        travel = max(view.ee[2], view.part_box(joint)[1, 2] + 0.1)
        closed = lambda v: v.qpos(joint) > threshold + 0.004  # noqa: E731
        return Chain([
            *front_approach(lambda v: front(v) + 0.4 * DRAWER_STANDOFF * pull, orient, yaw, CLOSE, travel),
            Until(MoveTo(lambda v: front(v) - 0.06 * pull, yaw, CLOSE, tol=0.0, max_steps=100, orient=orient),
                  closed),
            *front_leave(pull, orient, CLOSE, np.array([*view.ee[:2], travel])),
        ])

    return Planned(build, lambda v: v.qpos(joint) > threshold)


def turn_knob(joint: str, threshold: float) -> Skill:
    """Grasp a stove knob top-down and twist the wrist about the knob's vertical axis until on.

    Skipped when already on (libero_10 8's stove starts on).
    """

    def build(view: SceneView) -> Skill:
        if view.qpos(joint) >= threshold:
            return Chain([])
        box = view.part_box(joint)
        top = box[1, 2]
        knob = np.array([*box.mean(0)[:2], top - 0.012])
        yaw = yaw_of(view.state.ee_mat)
        turned = lambda v: v.qpos(joint) > threshold + 0.3  # noqa: E731
        return Chain([
            MoveTo(lambda v: np.array([*knob[:2], max(top + 0.08, v.ee[2])]), yaw, OPEN, tol=0.015),
            MoveTo(lambda v: knob, yaw, OPEN, tol=0.008, max_steps=40),
            CloseGripper(yaw),
            Until(MoveTo(lambda v: knob, yaw + 1.4, CLOSE, tol=0.0, max_steps=40), turned),
            Hold(OPEN, yaw + 1.4, steps=5),
            MoveTo(lambda v: v.ee + [0.0, 0.0, 0.08], yaw + 1.4, OPEN, tol=0.02, max_steps=10),
        ])

    return Planned(build, lambda v: v.qpos(joint) >= threshold)


# -- hinged doors (the microwave) ------------------------------------------------------------------------

DOOR_CLOSED_ABOVE = -0.005  # LIBERO's microwave counts as closed above this door angle (0: shut)
DOOR_WIDE_BELOW = -1.7  # a door opened this far (about 100 degrees) leaves the way to its opening free
DOOR_MIN_WIDTH = 0.1  # a vertical hinge moving a part at least this wide is a door (not a knob)
MUG_HANDLES = {"white_yellow_mug": 1.0, "porcelain_mug": -1.0}  # handle side along the mug's own x axis
HANDLE_INSET = 0.0045  # handle grasp: grip site this far inside the handle's outer face (its bar's middle)
HANDLE_HEIGHT = 0.55  # and at this fraction of the mug's height
HANDLE_PITCH = np.deg2rad(45.0)  # fingers tilted this far from vertical towards the mug's body
ENTRY_MARGIN = 0.03  # carried in: the object waits this far in front of the opening
ENTRY_LIFT = 0.01  # and goes in this much above its release height
DOOR_PUSH_AT = 0.7  # push a door at this fraction of its width from the hinge (inside its handle)
DOOR_OUTSIDE = 0.04  # shutting: grip site this far out from the hinge's plane (just off the door's outer face)
DOOR_INSIDE = 0.015  # opening: this far in from it (LIBERO's microwave door: inner face on the plane)
DOOR_BELOW_TOP = 0.015  # and this far below the door's top edge (the hand passes above it)
DOOR_AHEAD = 0.15  # servo the fingertips this many radians ahead along the door's arc


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about the unit ``axis`` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k


@dataclass(frozen=True)
class Door:
    """A door on a vertical hinge; LIBERO's microwave door is shut at joint position 0 and opens negative."""

    hinge: np.ndarray  # (3,) a point on the hinge's axis
    axis: np.ndarray  # (3,) the joint axis
    shut: np.ndarray  # (3,) horizontal unit vector from the hinge to the free edge when shut
    width: float
    top: float  # height of the door's top edge

    def along(self, q: float) -> np.ndarray:
        """Unit vector from the hinge to the free edge at joint position ``q``."""
        return axis_rotation(self.axis, q) @ self.shut

    def swing(self, q: float) -> np.ndarray:
        """Way the door's points move as ``q`` grows (towards shut); its outer face looks the other way."""
        return np.cross(self.axis, self.along(q))

    @property
    def inward(self) -> np.ndarray:
        """Into the fixture through its opening."""
        return self.swing(0.0)

    def point(self, q: float, radius: float, out: float, z: float) -> np.ndarray:
        """``radius`` from the hinge along the door at ``q``, ``out`` in front of the hinge's plane, at height ``z``."""
        p = self.hinge + radius * self.along(q) - out * self.swing(q)
        return np.array([p[0], p[1], z])


def door(view: SceneView, joint: str) -> Door:
    """The door moved by ``joint`` (its body's origin on the hinge), from the part's box at reset.

    Shut, the door lies flush with a face of its fixture: of the fixture's horizontal axes, the one nearest
    the direction of the box's middle turned back to joint position 0 (the box's middle alone is several
    degrees off, its handle sticks out of the door).
    """
    part = view.geometry.parts[joint]
    middle = part.bounds.mean(0) * [1.0, 1.0, 0.0]  # the door's middle, from the hinge at reset
    guess = axis_rotation(part.axis, -part.qpos) @ middle
    fixture = view.rot(next(b for b in view.task.body_names if joint.startswith(b)))
    faces = [sign * unit(fixture[:, i] * [1.0, 1.0, 0.0]) for i in (0, 1) for sign in (1.0, -1.0)]
    shut = max(faces, key=lambda f: float(f @ guess))
    width = 2.0 * float(shut @ guess)
    return Door(part.pos, part.axis, shut, width, float(part.pos[2] + part.bounds[1, 2]))


def door_joint(task: TaskInfo, geometry: SceneGeometry, fixture: str) -> str | None:
    """The joint of ``fixture``'s door (a vertical hinge moving a wide part), if it has one."""
    for joint in task.articulation_names:
        part = geometry.parts.get(joint)
        if joint.startswith(fixture) and part is not None and abs(part.axis[2]) > 0.9 \
                and float(np.linalg.norm(part.bounds[1, :2] - part.bounds[0, :2])) > DOOR_MIN_WIDTH:
            return joint
    return None


def handle_side(obj: str) -> float | None:
    """Side (+1 or -1) of ``obj``'s handle along its own x axis, for the mugs whose meshes are known."""
    return MUG_HANDLES.get(obj.rsplit("_", 1)[0])


def handle_grasp(view: SceneView, obj: str) -> Grasp:
    """Grasp a mug by its handle, the fingers closing across the handle and tilted towards the mug's body.

    Tilted by ``HANDLE_PITCH``, the hand stays behind and above the handle: carrying the mug in through a
    microwave's opening, handle last, it passes under the ceiling (a top-down hand would hit it).
    """
    lo, hi = view.geometry.bounds[obj]
    side = handle_side(obj)
    rot = view.rot(obj)
    bar = hi[0] - HANDLE_INSET if side > 0 else lo[0] + HANDLE_INSET
    local = np.array([bar, 0.5 * (lo[1] + hi[1]), lo[2] + HANDLE_HEIGHT * (hi[2] - lo[2])])
    out = unit(rot[:, 0] * side * [1.0, 1.0, 0.0])  # from the mug's body towards its handle
    approach = -np.sin(HANDLE_PITCH) * out - np.cos(HANDLE_PITCH) * np.array([0.0, 0.0, 1.0])
    orient = front_orientation(approach, np.cross([0.0, 0.0, 1.0], out), view.state.ee_mat)
    return Grasp(rot @ local, yaw_of(view.state.ee_mat), orient)


def goal_behind_door(obj: str, region: str, joint: str) -> Callable[[SceneView], np.ndarray]:
    """Origin goal in ``region`` behind a door: the region's depth and release height, centred across the
    door's span (the opening)."""
    in_region = goal_in_region(obj, region, on_top=False)

    def goal(v: SceneView) -> np.ndarray:
        d = door(v, joint)
        depth = float((v.region_centre(region) - d.hinge) @ d.inward)
        middle = d.hinge + 0.5 * d.width * d.shut + depth * d.inward
        return np.array([middle[0], middle[1], in_region(v)[2]])

    return goal


def place_inside(obj: str, goal: Callable[[SceneView], np.ndarray], joint: str) -> Skill:
    """Carry the held ``obj`` in through the opening of the door of ``joint``, keeping the hand's orientation.

    Over everything to just in front of the opening, lowered there, horizontally in just above its release
    height, lowered, released; the hand backs out and turns top-down (as from a drawer).
    """

    def build(view: SceneView) -> Skill:
        orient, yaw = view.state.ee_mat.copy(), yaw_of(view.state.ee_mat)
        release, travel = carry(view, obj, goal)
        d = door(view, joint)
        reach = float(np.max((view.corners(obj) - view.ee) @ d.inward))  # the object ahead of the grip site
        out = lambda v: float((release(v) - d.hinge) @ d.inward) + reach + ENTRY_MARGIN  # noqa: E731
        lifted = lambda v: release(v) + [0.0, 0.0, ENTRY_LIFT]  # noqa: E731
        front = lambda v: lifted(v) - out(v) * d.inward  # noqa: E731
        return Chain([
            MoveTo(lambda v: np.array([*v.ee[:2], travel]), yaw, CLOSE, tol=0.02, orient=orient),
            MoveTo(lambda v: np.array([*front(v)[:2], travel]), yaw, CLOSE, tol=0.015, max_steps=80, orient=orient),
            MoveTo(front, yaw, CLOSE, tol=0.015, max_steps=60, orient=orient),
            MoveTo(lifted, yaw, CLOSE, tol=0.01, max_steps=60, orient=orient),
            MoveTo(release, yaw, CLOSE, tol=0.01, max_steps=20, orient=orient),
            Hold(OPEN, yaw, steps=6, orient=orient),
            *front_leave(-d.inward, orient, OPEN, np.array([*front(view)[:2], travel])),
        ])

    return Planned(build)


def swing_door(joint: str, done: Callable[[SceneView], bool], shut: bool = True) -> Skill:
    """Push a door along its arc until ``done``: shut by its outer face, or open by its inner face.

    The closed fingertips of a top-down hand press just below the door's top edge, where the hand (wider than
    the fingertips) passes above it, at ``DOOR_PUSH_AT`` of its width; they are servoed ``DOOR_AHEAD`` ahead
    along the door's arc at that radius. Skipped when already ``done``.
    """
    sign = 1.0 if shut else -1.0

    def build(view: SceneView) -> Skill:
        if done(view):
            return Chain([])
        d = door(view, joint)
        radius, z = DOOR_PUSH_AT * d.width, d.top - DOOR_BELOW_TOP
        out = DOOR_OUTSIDE if shut else -DOOR_INSIDE
        at = lambda v, dq: d.point(v.qpos(joint) + dq, radius, out, z)  # noqa: E731
        start = at(view, -sign * DOOR_AHEAD)
        yaw, travel = yaw_of(view.state.ee_mat), max(view.ee[2], d.top + 0.1)
        return Chain([
            MoveTo(lambda v: np.array([*start[:2], travel]), yaw, CLOSE, tol=0.03, max_steps=80),
            MoveTo(lambda v: start, yaw, CLOSE, tol=0.015, max_steps=40),
            Until(MoveTo(lambda v: at(v, sign * DOOR_AHEAD), yaw, CLOSE, tol=0.0, max_steps=200), done),
            MoveTo(lambda v: v.ee + [0.0, 0.0, 0.08], yaw, CLOSE, tol=0.02, max_steps=15),
        ])

    return Planned(build, done)


# -- goal predicates -> plan ---------------------------------------------------------------------------

DRAWER_OPEN_BELOW = -0.14  # LIBERO's cabinets count as open below this joint position
DRAWER_CLOSED_ABOVE = 0.0  # and as closed above this one
KNOB_ON_ABOVE = 0.5  # LIBERO's stoves count as on from this knob angle


def plan_for(task: TaskInfo) -> Callable[[SceneGeometry], list[Skill]]:
    """Check the task's goal and return a builder of its skill plan (raises ``ConfigError`` if unsupported)."""
    order = {"open": 0, "turnon": 1, "in": 2, "on": 2, "close": 3}
    steps: list[Callable[[SceneGeometry], list[Skill]]] = []
    for pred in sorted(task.goal_predicates, key=lambda p: order.get(p[0].lower(), 9)):
        steps.append(_predicate_plan(task, tuple(pred)))
    return lambda geometry: [skill for step in steps for skill in step(geometry)]


def _predicate_plan(task: TaskInfo, pred: tuple[str, ...]) -> Callable[[SceneGeometry], list[Skill]]:
    """Skills achieving one goal predicate (validated now, built per episode from the scene geometry)."""
    name = pred[0].lower()
    unsupported = ConfigError(
        f"ScriptedExpert cannot solve {task.suite} task {task.task_id} ({task.name}): goal predicate "
        f"{pred} is not supported; supported predicates: {', '.join(SUPPORTED)} "
        "(drawers only for 'open'; drawers and hinged doors for 'close')"
    )
    if name in ("in", "on") and len(pred) == 3 and pred[1] in task.object_names:
        obj, target = pred[1], pred[2]
        if target in task.body_names:
            return lambda g: [pick(obj), place(obj, goal_on_body(obj, target))]

        def region_plan(g: SceneGeometry) -> list[Skill]:
            parent = g.regions[target].parent
            if parent is None and too_wide(g, obj):  # a plate onto a table region
                return [push(obj, target)]
            joint = door_joint(task, g, parent) if parent is not None and name == "in" else None
            if joint is not None:  # into a microwave: door out of the way, mug by its handle, in through the front
                if handle_side(obj) is None:
                    raise unsupported
                wide = lambda v: v.qpos(joint) < DOOR_WIDE_BELOW  # noqa: E731
                return [swing_door(joint, wide, shut=False), pick(obj, handle_grasp),
                        place_inside(obj, goal_behind_door(obj, target, joint), joint)]
            pre = [s for j in g.regions[target].joints for s in opening(task, j)]
            # objects set down on the same surface stand side by side (dropped in a basket, they settle together)
            sharing = tuple(p[1] for p in task.goal_predicates if p[0].lower() == "on" == name and p[2] == target)
            return [*pre, pick(obj), place(obj, goal_in_region(obj, target, name == "on", sharing))]

        return region_plan
    if name == "open" and len(pred) == 2 and pred[1].endswith("_region"):
        return lambda g: [s for j in g.regions[pred[1]].joints for s in opening(task, j)]
    if name == "close" and len(pred) == 2 and pred[1].endswith("_region"):
        return lambda g: [close_drawer(j, DRAWER_CLOSED_ABOVE) for j in g.regions[pred[1]].joints]
    if name == "close" and len(pred) == 2 and pred[1] in task.fixture_names:

        def shut_door(g: SceneGeometry) -> list[Skill]:
            joint = door_joint(task, g, pred[1])
            if joint is None:
                raise unsupported
            return [swing_door(joint, lambda v: v.qpos(joint) > DOOR_CLOSED_ABOVE + 0.003)]

        return shut_door
    if name == "turnon" and len(pred) == 2:
        joints = [j for j in task.articulation_names if j.startswith(pred[1])]
        if joints:
            return lambda g: [turn_knob(joints[0], KNOB_ON_ABOVE)]
    raise unsupported


def opening(task: TaskInfo, joint: str) -> list[Skill]:
    """Open a drawer, first dragging the task's objects to move out from under it."""
    movers = [p[1] for p in task.goal_predicates if p[0].lower() in ("in", "on") and len(p) == 3]
    open_qpos = DRAWER_OPEN_BELOW - 0.02
    return [*(clear_from_drawer(o, joint, open_qpos) for o in movers if o in task.object_names),
            open_drawer(joint, DRAWER_OPEN_BELOW)]


def supports(task: TaskInfo) -> bool:
    """Whether ``ScriptedExpert`` can attempt every goal predicate of ``task``."""
    try:
        plan_for(task)
    except ConfigError:
        return False
    return True


class ScriptedExpert:
    """A privileged-state expert for one LIBERO task; ``act`` is deterministic given state and phase.

    Args:
        task: the task to solve; raises ``ConfigError`` naming the task and the unsupported predicate if
            its goal contains one the expert cannot achieve.
    """

    def __init__(self, task: TaskInfo):
        self.task = task
        self._builder = plan_for(task)
        self._geometry: SceneGeometry | None = None
        self._plan: list[Skill] = []
        self._yaw = 0.0

    def reset(self, geometry: SceneGeometry | None = None) -> None:
        """Start a new episode. ``geometry`` is ``LiberoEnv.scene_geometry()`` of this episode.

        The geometry (object extents, region boxes, articulated parts) is not part of ``PrivilegedState``
        and is required: without it ``act`` raises ``ConfigError``.
        """
        self._geometry = geometry
        self._plan = self._builder(geometry) if geometry is not None else []

    def act(self, state: PrivilegedState) -> np.ndarray:
        """The next (7,) action in [-1, 1] for ``state``; holds still with an open gripper once done."""
        if self._geometry is None:
            raise ConfigError("ScriptedExpert.act needs reset(env.scene_geometry()) at the start of each episode")
        view = SceneView(self.task, self._geometry, state)
        while self._plan:
            action = self._plan[0].act(view)
            if action is not None:
                self._yaw = yaw_of(state.ee_mat)
                return np.clip(action, -1.0, 1.0)
            self._plan.pop(0)
        return servo(view, state.ee_pos, self._yaw, OPEN)
