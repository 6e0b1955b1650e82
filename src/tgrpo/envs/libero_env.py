"""A typed wrapper over one real LIBERO environment (robosuite 1.4 + MuJoCo).

It adds what RL on LIBERO needs and LIBERO leaves to each script: selection of suite, task and fixed
initial state by index with clear errors, the protocol's settle steps, configurable cameras (none at all
when a caller needs no images), and the privileged simulator state that dense rewards and scripted
experts read (object poses, end-effector pose, gripper opening, articulated joints, goal predicates).

Images are returned exactly as LIBERO renders them (upside down, LIBERO's dataset convention); policies
rotate them (see OpenVLA's LIBERO script), so data from our demos and from official datasets agree.
"""

from __future__ import annotations

import contextlib
import io
import os
import weakref
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from tgrpo.envs.config import CAMERA_NAMES, EnvConfig
from tgrpo.envs.suites import NUM_SETTLE_STEPS, SETTLE_ACTION, get_suite
from tgrpo.errors import ConfigError, SimulationError, range_error


def configure_rendering(backend: str) -> None:
    """Select MuJoCo's headless GL backend. Must run before robosuite/mujoco is first imported."""
    os.environ.setdefault("MUJOCO_GL", backend)
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


@lru_cache(maxsize=None)
def _benchmark(suite: str) -> Any:
    get_suite(suite)  # validates the name first, with the list of valid suites
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO-Pro prints its task order on construction
        from libero.libero import benchmark

        return benchmark.get_benchmark_dict()[suite]()


@dataclass(frozen=True)
class TaskInfo:
    """Static description of one LIBERO task.

    Attributes:
        suite: suite name, e.g. ``"libero_object"``.
        task_id: index of the task in its suite (0-based).
        name: LIBERO's task name (the BDDL file's stem).
        language: the natural-language instruction given to the policy.
        bddl_file: absolute path of the task's BDDL problem file.
        goal_predicates: the BDDL goal, a conjunction of predicates such as ``("in", "bowl_1", "plate_1_region")``.
        objects_of_interest: objects (and regions) named by the goal, from LIBERO's parsed problem.
        object_names: movable objects of the scene, in the order of ``PrivilegedState.object_pos``.
        fixture_names: fixtures of the scene (tables, cabinets, stoves), after the objects in ``object_pos``.
        articulation_names: joints of articulated fixtures (drawers, doors, knobs), order of ``articulation_qpos``.
        max_steps: the suite's policy-step budget in the LIBERO protocol.
        num_init_states: how many fixed initial states LIBERO ships for the task.
    """

    suite: str
    task_id: int
    name: str
    language: str
    bddl_file: str
    goal_predicates: tuple[tuple[str, ...], ...] = ()
    objects_of_interest: tuple[str, ...] = ()
    object_names: tuple[str, ...] = ()
    fixture_names: tuple[str, ...] = ()
    articulation_names: tuple[str, ...] = ()
    max_steps: int = 0
    num_init_states: int = 0

    @property
    def body_names(self) -> tuple[str, ...]:
        """Names of the rows of ``PrivilegedState.object_pos``: objects then fixtures."""
        return self.object_names + self.fixture_names


def task_names(suite: str) -> list[str]:
    """LIBERO's task names of ``suite`` in index order."""
    return list(_benchmark(suite).get_task_names())


def task_language(suite: str, task_id: int) -> str:
    """The instruction of task ``task_id`` of ``suite`` (without building its environment)."""
    return _benchmark(suite).get_task(task_id).language


def check_action(action: np.ndarray) -> np.ndarray:
    """``action`` as a (7,) float64 array; anything else, or a non-finite value, is refused by name."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape != (7,) or not np.all(np.isfinite(action)):
        raise ConfigError(f"action must be 7 finite numbers in [-1, 1], got {action.tolist()}")
    return action


def resolve_task(suite: str, task: int | str) -> int:
    """Return the task index for ``task`` (an index or a task name); errors list the valid range/names."""
    names = task_names(suite)
    if isinstance(task, str) and not task.lstrip("-").isdigit():
        if task not in names:
            raise ConfigError(
                f"unknown task {task!r} in {suite}; valid names: " + ", ".join(f"{i}={n}" for i, n in enumerate(names))
            )
        return names.index(task)
    index = int(task)
    if not 0 <= index < len(names):
        raise range_error(f"task index for {suite}", index, 0, len(names) - 1)
    return index


def load_init_states(suite: str, task_id: int) -> np.ndarray:
    """LIBERO's fixed initial states of a task, shape (num_init_states, sim_state_dim)."""
    return np.asarray(_benchmark(suite).get_task_init_states(task_id))


@dataclass
class PrivilegedState:
    """Simulator state for rewards and scripted experts (never shown to the policy).

    Every field may carry leading batch dimensions ``*B`` (e.g. ``(N, T+1)`` inside a ``GroupRollout``);
    shapes below are for one state. Positions are world-frame metres; quaternions are (x, y, z, w).

    Attributes:
        ee_pos: (3,) end-effector (grip site) position.
        ee_quat: (4,) end-effector orientation, robosuite's ``robot0_eef_quat``.
        ee_mat: (3, 3) grip-site rotation matrix; column 0 is the fingers' closing direction.
        gripper_qpos: (2,) finger joint positions (about +-0.04 open, ~0.001 closed on nothing).
        joint_pos: (7,) arm joint angles.
        object_pos: (K, 3) positions of ``TaskInfo.body_names`` (objects then fixtures).
        object_quat: (K, 4) orientations of the same bodies.
        articulation_qpos: (J,) positions of ``TaskInfo.articulation_names``.
        goal_flags: (G,) truth value of each goal predicate.
        success: () whether all goal predicates hold (LIBERO's ``check_success``).
        sim_state: (D,) flattened MuJoCo state, as in LIBERO's ``states`` datasets.
    """

    ee_pos: np.ndarray
    ee_quat: np.ndarray
    ee_mat: np.ndarray
    gripper_qpos: np.ndarray
    joint_pos: np.ndarray
    object_pos: np.ndarray
    object_quat: np.ndarray
    articulation_qpos: np.ndarray
    goal_flags: np.ndarray
    success: np.ndarray
    sim_state: np.ndarray

    @classmethod
    def stack(cls, states: Sequence["PrivilegedState"]) -> "PrivilegedState":
        """Stack states along a new leading axis."""
        return cls(**{f.name: np.stack([getattr(s, f.name) for s in states]) for f in fields(cls)})

    def index(self, key: Any) -> "PrivilegedState":
        """Index every field with the same key over the leading dimensions (e.g. ``s.index((i, t))``)."""
        return type(self)(**{f.name: getattr(self, f.name)[key] for f in fields(self)})

    @property
    def proprio(self) -> np.ndarray:
        """(*B, 8) float32 proprioception the policy may see: ee position, ee axis-angle, finger positions.

        The same numbers as LIBERO's dataset keys ``ee_pos``, ``ee_ori`` and ``gripper_states``.
        """
        parts = [self.ee_pos, axis_angle_from_quat(self.ee_quat), self.gripper_qpos]
        return np.concatenate(parts, axis=-1).astype(np.float32)


@dataclass(frozen=True)
class RegionGeometry:
    """A BDDL region (a site) as scripted experts need it.

    Attributes:
        parent: body whose motion the region follows (a row of ``TaskInfo.body_names``), or ``None`` when
            the region is fixed in the world (table regions).
        offset: (3,) region centre minus the parent's origin at reset, world axes; the world position when
            ``parent`` is ``None``.
        half_size: (3,) half extents along the world axes, as LIBERO's ``in_box`` test uses them.
        joints: joints of the articulated part the region belongs to (a drawer), else empty.
    """

    parent: str | None
    offset: np.ndarray
    half_size: np.ndarray
    joints: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartGeometry:
    """One articulated part (drawer, door, knob): the body moved by a joint of ``TaskInfo.articulation_names``.

    Attributes:
        pos: (3,) world position of the part's body origin at reset.
        axis: (3,) joint axis in world coordinates.
        qpos: joint position at reset.
        bounds: (2, 3) lower/upper corners of the part's collision geoms relative to ``pos``, world axes.
    """

    pos: np.ndarray
    axis: np.ndarray
    qpos: float
    bounds: np.ndarray


@dataclass(frozen=True)
class SceneGeometry:
    """Static geometry of one episode's scene for scripted experts (read once after a reset).

    Attributes:
        bounds: body name (``TaskInfo.body_names``) -> (2, 3) lower/upper corners of the collision geoms of
            the body and its sub-bodies, in the body's own frame (rotate by ``object_quat`` for world axes).
        regions: region name -> its geometry.
        parts: joint name (``TaskInfo.articulation_names``) -> the part it moves.
        robot_base: (3,) world position of the arm's base (how far the hand reaches; LIBERO's scenes place it
            0.66-0.75 m behind the table's centre along -x).
    """

    bounds: dict[str, np.ndarray]
    regions: dict[str, RegionGeometry]
    parts: dict[str, PartGeometry]
    robot_base: np.ndarray


@dataclass
class Observation:
    """What one environment returns after a reset or a step.

    Attributes:
        images: camera name (``"agentview"``, ``"wrist"``) -> (H, W, 3) uint8, LIBERO's upside-down layout.
            Empty when the env renders no cameras.
        state: privileged simulator state.
        scene: static scene geometry of the episode, set on the observation returned by ``reset`` only.
    """

    images: dict[str, np.ndarray] = field(default_factory=dict)
    state: PrivilegedState | None = None
    scene: "SceneGeometry | None" = None

    @property
    def success(self) -> bool:
        return bool(self.state.success)


def axis_angle_from_quat(quat: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw quaternion -> (..., 3) axis-angle, as robosuite's ``quat2axisangle`` (LIBERO's ee_ori)."""
    quat = np.asarray(quat, dtype=np.float64)
    w = np.clip(quat[..., 3], -1.0, 1.0)
    den = np.sqrt(np.maximum(1.0 - w * w, 0.0))
    angle = 2.0 * np.arccos(w)
    scale = np.where(den > 1e-8, angle / np.maximum(den, 1e-8), 0.0)
    return quat[..., :3] * scale[..., None]


# LiberoEnvs with cameras alive in this process: a second one's offscreen context breaks the first's images
# (measured with EGL: the first env then returns the same garbage frame for both cameras, unrendered)
_RENDERING: "weakref.WeakSet[LiberoEnv]" = weakref.WeakSet()


class LiberoEnv:
    """One LIBERO task environment with the LIBERO evaluation protocol built in.

    >>> env = LiberoEnv(EnvConfig(suite="libero_object", task=0))
    >>> obs = env.reset(init_state=3)          # fixed initial state 3, then 10 settle steps
    >>> obs = env.step(np.zeros(7))            # one 20 Hz OSC_POSE control step
    """

    def __init__(self, config: EnvConfig):
        if config.renders and any(env._env is not None for env in _RENDERING):
            raise ConfigError("another LiberoEnv with cameras is open in this process: robosuite's offscreen "
                              "contexts collide and the first one's images come out wrong. Close it first, or run "
                              "several environments in worker processes (tgrpo.rollout.EnvPool)")
        self.config = config
        self._env = None
        configure_rendering(config.render_backend)
        suite = _benchmark(config.suite)
        self.task_id = resolve_task(config.suite, config.task)
        task = suite.get_task(self.task_id)
        from libero.libero import get_libero_path
        from libero.libero.envs.env_wrapper import ControlEnv

        bddl_file = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        self._init_states = load_init_states(config.suite, self.task_id)
        spec = get_suite(config.suite)
        cameras = [CAMERA_NAMES[c] for c in config.cameras]
        self._env = ControlEnv(
            bddl_file_name=bddl_file,
            use_camera_obs=bool(cameras),
            has_offscreen_renderer=bool(cameras),
            camera_names=cameras or ["agentview"],
            camera_heights=config.image_size,
            camera_widths=config.image_size,
            hard_reset=False,  # soft reset: 0.1 s instead of 1.5-2 s; init states are set explicitly anyway
            ignore_done=True,  # the protocol's max steps are enforced here, not by robosuite's horizon
            horizon=10_000,
        )
        raw = self._env.env
        model = raw.sim.model
        problem = raw.parsed_problem
        objects = tuple(n for names in problem["objects"].values() for n in names if n in raw.obj_body_id)
        fixtures = tuple(n for names in problem["fixtures"].values() for n in names if n in raw.obj_body_id)
        articulations = tuple(
            model.joint_id2name(j)
            for j in range(model.njnt)
            if model.jnt_type[j] != 0 and not model.joint_id2name(j).startswith(("robot0_", "gripper0_"))
        )
        self.task = TaskInfo(
            suite=config.suite,
            task_id=self.task_id,
            name=task.name,
            language=task.language,
            bddl_file=bddl_file,
            goal_predicates=tuple(tuple(p) for p in problem["goal_state"]),
            objects_of_interest=tuple(problem["obj_of_interest"]),
            object_names=objects,
            fixture_names=fixtures,
            articulation_names=articulations,
            max_steps=spec.max_steps,
            num_init_states=len(self._init_states),
        )
        self._body_ids = np.array([raw.obj_body_id[n] for n in self.task.body_names], dtype=np.int64)
        self._qpos_addr = np.array([model.jnt_qposadr[model.joint_name2id(n)] for n in articulations], dtype=np.int64)
        robot = raw.robots[0]
        self._eef_site = robot.eef_site_id
        self._hand_body = model.body_name2id(robot.robot_model.eef_name)
        self._arm_qpos_addr = np.array(robot._ref_joint_pos_indexes, dtype=np.int64)
        self._finger_qpos_addr = np.array(robot._ref_gripper_joint_pos_indexes, dtype=np.int64)
        self._camera_keys = {c: f"{CAMERA_NAMES[c]}_image" for c in config.cameras}
        self._multisamples: int | None = None  # None: the scene file's own (LIBERO asks for 4)
        if config.renders:
            _RENDERING.add(self)
        self.steps = 0

    # -- episode control -------------------------------------------------------------------------------

    def reset(self, init_state: int | None = None, seed: int | None = None) -> Observation:
        """Start an episode and run the protocol's settle steps.

        Args:
            init_state: index of one of LIBERO's fixed initial states of this task; ``None`` samples a new
                placement from the task's BDDL regions (used for demonstrations, so that the fixed states
                stay held out for evaluation).
            seed: seeds the placement sampler when ``init_state`` is ``None`` (same seed -> same scene).
        """
        if init_state is not None and not 0 <= int(init_state) < len(self._init_states):
            raise range_error(f"init-state index for {self.task.suite} task {self.task_id}", init_state, 0,
                              len(self._init_states) - 1)
        if seed is not None:
            np.random.seed(seed)  # robosuite's placement samplers draw from numpy's global generator
        raw = self._env.env
        # A soft reset samples placements against stale fixture positions: objects that start on a fixture
        # (libero_spatial's bowl on the stove or cabinet) land off the table. A new placement therefore
        # needs robosuite's hard reset (model rebuilt, ~1.5 s); a fixed init state overwrites the whole
        # simulator state, so the soft reset (0.1 s) is exact there.
        raw.hard_reset = init_state is None
        try:
            self._env.reset()
        finally:
            raw.hard_reset = False
        # robosuite's gripper integrates its command in `current_action`, which a soft reset keeps: without
        # this, an episode would depend on how the previous one ended.
        gripper = self._env.env.robots[0].gripper
        gripper.current_action = np.zeros_like(gripper.current_action)
        self._apply_multisampling()  # a hard reset rebuilt the model with the scene file's sample count
        if init_state is not None:
            self._env.set_init_state(self._init_states[int(init_state)])
        obs = None
        for _ in range(NUM_SETTLE_STEPS):
            obs, *_ = self._env.step(np.asarray(SETTLE_ACTION))
        self.steps = 0
        first = self._observation(obs)
        first.scene = self.scene_geometry()
        return first

    def restore(self, sim_state: np.ndarray) -> Observation:
        """Set the simulator to a recorded flattened MuJoCo state (e.g. a demo's ``states[t]``), no stepping.

        Returns the privileged state and scene geometry there (no images), for replaying demonstrations.
        """
        sim_state = np.asarray(sim_state, dtype=np.float64)
        expected = self._init_states.shape[1]
        if sim_state.shape != (expected,):
            raise ConfigError(f"sim state has shape {sim_state.shape}, this task's states have ({expected},)")
        self._env.set_init_state(sim_state)
        return Observation(state=self.privileged_state(), scene=self.scene_geometry())

    def set_multisampling(self, samples: int) -> None:
        """Render the cameras with ``samples``-fold multisample anti-aliasing from now on, resets included.

        LIBERO's scene files ask for 4 (the demonstrations and every policy here saw those images); 0 turns
        it off, which renders about 1.33x faster and changes the images at object edges (docs/performance.md).
        """
        if not self.config.renders:
            raise ConfigError("multisampling applies to camera images; this environment renders no cameras")
        if not 0 <= samples <= 16:
            raise range_error("multisamples", samples, 0, 16)
        self._multisamples = int(samples)
        self._apply_multisampling()

    def _apply_multisampling(self) -> None:
        sim = self._env.env.sim
        if self._multisamples is None or sim.model.vis.quality.offsamples == self._multisamples:
            return
        sim.model.vis.quality.offsamples = self._multisamples
        context = sim._render_context_offscreen
        context.gl_ctx.make_current()
        context._set_mujoco_context_and_buffers()  # robosuite's: the buffers take the sample count when made

    def step(self, action: np.ndarray) -> Observation:
        """Apply one 7-d action (xyz delta, axis-angle delta, gripper -1 open / +1 close), each in [-1, 1]."""
        bad_before = self._bad_state_warnings()
        raw_obs, *_ = self._env.step(np.clip(check_action(action), -1.0, 1.0))
        if self._bad_state_warnings() > bad_before:
            raise SimulationError(
                f"MuJoCo became unstable at step {self.steps + 1} of {self.task.suite} task {self.task.task_id} "
                "(non-finite or huge positions, velocities or accelerations); MuJoCo reset its state, so this "
                "episode is no longer valid. Reset the environment (training re-samples the group).")
        self.steps += 1
        return self._observation(raw_obs)

    def _bad_state_warnings(self) -> int:
        """How often MuJoCo has found a bad qpos, qvel or qacc (and reset the state) in this simulation."""
        import mujoco

        warnings = self._env.sim.data._data.warning
        return sum(int(warnings[w].number) for w in (mujoco.mjtWarning.mjWARN_BADQPOS,
                                                        mujoco.mjtWarning.mjWARN_BADQVEL,
                                                        mujoco.mjtWarning.mjWARN_BADQACC))

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()

    def __enter__(self) -> "LiberoEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observation ---------------------------------------------------------------------------------

    def model_xml(self) -> str:
        """The MuJoCo model XML of the current scene (stored per demo in LIBERO's datasets)."""
        return self._env.env.sim.model.get_xml()

    def privileged_state(self) -> PrivilegedState:
        raw = self._env.env
        data = raw.sim.data
        quat_wxyz = data.xquat[self._body_ids]
        ee_mat = data.site_xmat[self._eef_site].reshape(3, 3).copy()
        flags = np.array([bool(raw._eval_predicate(list(p))) for p in self.task.goal_predicates], dtype=bool)
        return PrivilegedState(
            ee_pos=data.site_xpos[self._eef_site].copy(),
            ee_quat=np.roll(data.xquat[self._hand_body], -1),  # wxyz -> xyzw, robosuite's robot0_eef_quat
            ee_mat=ee_mat,
            gripper_qpos=data.qpos[self._finger_qpos_addr].copy(),
            joint_pos=data.qpos[self._arm_qpos_addr].copy(),
            object_pos=data.xpos[self._body_ids].copy(),
            object_quat=np.roll(quat_wxyz, -1, axis=-1).copy(),
            articulation_qpos=data.qpos[self._qpos_addr].copy(),
            goal_flags=flags,
            success=np.array(bool(flags.all()) if len(flags) else bool(self._env.check_success())),
            sim_state=self._env.get_sim_state().copy(),
        )

    def scene_geometry(self) -> SceneGeometry:
        """Object extents, region boxes and articulated parts of the current episode (scripted experts)."""
        raw = self._env.env
        model, data = raw.sim.model._model, raw.sim.data._data
        body_ids = dict(zip(self.task.body_names, self._body_ids.tolist()))
        bounds = {name: self._subtree_bounds(bid, local=True) for name, bid in body_ids.items()}
        regions = {}
        for name, site in raw.object_sites_dict.items():
            pos, mat = raw.sim.data.get_site_xpos(name), raw.sim.data.get_site_xmat(name)
            parent = site.parent_name if site.parent_name in body_ids else None  # drawers: see ``joints``
            origin = data.xpos[body_ids[parent]] if parent else np.zeros(3)
            regions[name] = RegionGeometry(parent, pos - origin, np.abs(mat @ np.asarray(site.size, float)),
                                           tuple(site.joints or ()))
        parts = {}
        for joint in self.task.articulation_names:
            jid = model.joint(joint).id
            bid = int(model.jnt_bodyid[jid])
            axis = data.xmat[bid].reshape(3, 3) @ model.jnt_axis[jid]
            parts[joint] = PartGeometry(data.xpos[bid].copy(), axis, float(data.qpos[model.jnt_qposadr[jid]]),
                                        self._subtree_bounds(bid))
        robot_base = data.xpos[model.body(raw.robots[0].robot_model.root_body).id].copy()
        return SceneGeometry(bounds, regions, parts, robot_base)

    def _subtree_bounds(self, body_id: int, local: bool = False) -> np.ndarray:
        """(2, 3) box around the collision geoms of a body and its descendants, relative to its origin.

        The box is aligned with the world axes, or with the body's own axes when ``local``.
        """
        model, data = self._env.env.sim.model._model, self._env.env.sim.data._data
        parents = model.body_parentid
        def in_subtree(b: int) -> bool:
            while b > 0 and b != body_id:
                b = parents[b]
            return b == body_id
        corners = []
        signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
        for g in range(model.ngeom):
            if (model.geom_contype[g] or model.geom_conaffinity[g]) and in_subtree(int(model.geom_bodyid[g])):
                center, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
                box = center + signs * half
                corners.append(data.geom_xpos[g] + box @ data.geom_xmat[g].reshape(3, 3).T)
        if not corners:
            return np.zeros((2, 3))
        pts = np.concatenate(corners) - data.xpos[body_id]
        if local:
            pts = pts @ data.xmat[body_id].reshape(3, 3)
        return np.stack([pts.min(0), pts.max(0)])

    def _observation(self, raw_obs: dict) -> Observation:
        images = {c: np.ascontiguousarray(raw_obs[k]) for c, k in self._camera_keys.items()}
        return Observation(images=images, state=self.privileged_state())
