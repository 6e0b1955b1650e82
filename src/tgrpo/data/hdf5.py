"""LIBERO's HDF5 demonstration format: writer for our demos, reader for ours and the official datasets.

Layout (as LIBERO's ``scripts/create_dataset.py`` writes it)::

    data/                         attrs: env_name, problem_info (JSON), bddl_file_name, bddl_file_content,
                                         env_args (JSON), macros_image_convention, num_demos, total
    data/demo_K/actions           (T, 7) float
    data/demo_K/states            (T, D) flattened MuJoCo states
    data/demo_K/robot_states      (T, 9) gripper qpos, eef pos, eef quat
    data/demo_K/rewards, dones    (T,) uint8, 1 on the last step
    data/demo_K/obs/agentview_rgb (T, H, W, 3) uint8, LIBERO's upside-down image convention
    data/demo_K/obs/eye_in_hand_rgb, ee_pos (T,3), ee_ori (T,3 axis-angle), ee_states (T,6),
                    gripper_states (T,2), joint_states (T,7)
                                  attrs on demo_K: num_samples, model_file, init_state

Step ``t`` pairs the observation before action ``t`` with action ``t`` in our files. (LIBERO's official
files pair the observation *after* an action with it; readers see both as (obs, action) rows.)

Writes go to ``<file>.partial`` and are renamed into place on a clean close, so an interrupted
collection never leaves a truncated file under the final name and never touches an existing one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from tgrpo.envs.libero_env import TaskInfo
from tgrpo.errors import DatasetError

# The observation keys a policy needs; the reader insists on these.
REQUIRED_OBS_KEYS = ("agentview_rgb", "eye_in_hand_rgb", "ee_pos", "ee_ori", "gripper_states", "joint_states")
IMAGE_CONVENTION = "opengl"  # robosuite's default: images are stored upside down
# Our camera names -> LIBERO dataset keys.
PROPRIO_KEYS = ("ee_pos", "ee_ori", "gripper_states")  # concatenated: the policy's 8-number proprioception
DATASET_IMAGE_KEYS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}


@dataclass
class Demo:
    """One demonstration episode.

    Attributes:
        actions: (T, 7) float32 actions.
        obs: observation arrays of length T (``REQUIRED_OBS_KEYS`` plus ``ee_states`` when present).
        states: (T, D) flattened MuJoCo states before each action (may be empty for foreign files).
        model_file: the scene's MuJoCo XML, when recorded.
        attrs: extra per-demo attributes (e.g. ``seed``, ``init_state_index``).
    """

    actions: np.ndarray
    obs: dict[str, np.ndarray]
    states: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    model_file: str = ""
    attrs: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.actions))

    @property
    def proprio(self) -> np.ndarray:
        """(T, 8) float32 ``ee_pos``, ``ee_ori``, ``gripper_states``: what ``PrivilegedState.proprio`` gives live."""
        return np.concatenate([self.obs[k] for k in PROPRIO_KEYS], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class DemoFileInfo:
    """File-level metadata: the task and the environment that produced the demos."""

    problem_name: str
    language_instruction: str
    bddl_file_name: str
    env_args: dict
    num_demos: int
    total: int


def default_demo_path(root: str | os.PathLike, suite: str, task_name: str) -> Path:
    """LIBERO's naming: ``<root>/<suite>/<task name>_demo.hdf5``."""
    return Path(root) / suite / f"{task_name}_demo.hdf5"


class DemoWriter:
    """Writes demos of one task into a LIBERO-format HDF5 file, atomically on :meth:`close`.

    >>> with DemoWriter(path, task, env_kwargs) as w:
    ...     w.add(demo)
    """

    def __init__(self, path: str | os.PathLike, task: TaskInfo, env_kwargs: dict | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.partial, "w")
        self._data = self._file.create_group("data")
        problem_info = {"problem_name": "libero_tabletop_manipulation", "domain_name": "robosuite",
                        "language_instruction": task.language}
        env_args = {"type": 1, "env_name": task.name, "problem_name": problem_info["problem_name"],
                    "bddl_file": task.bddl_file, "env_kwargs": env_kwargs or {}}
        self._data.attrs["env_name"] = task.name
        self._data.attrs["problem_info"] = json.dumps(problem_info)
        self._data.attrs["bddl_file_name"] = task.bddl_file
        self._data.attrs["bddl_file_content"] = Path(task.bddl_file).read_text() if Path(task.bddl_file).exists() else ""
        self._data.attrs["env_args"] = json.dumps(env_args)
        self._data.attrs["macros_image_convention"] = IMAGE_CONVENTION
        self._data.attrs["tgrpo_suite"] = task.suite
        self._data.attrs["tgrpo_task_id"] = task.task_id
        self.num_demos = 0
        self.total = 0

    def add(self, demo: Demo) -> None:
        group = self._data.create_group(f"demo_{self.num_demos}")
        n = len(demo)
        obs = group.create_group("obs")
        for key, value in demo.obs.items():
            value = np.asarray(value)
            opts = {"compression": "lzf"} if value.dtype == np.uint8 else {}
            obs.create_dataset(key, data=value, **opts)
        group.create_dataset("actions", data=np.asarray(demo.actions, dtype=np.float64))
        group.create_dataset("states", data=np.asarray(demo.states, dtype=np.float64))
        done = np.zeros(n, dtype=np.uint8)
        done[-1] = 1
        group.create_dataset("rewards", data=done)
        group.create_dataset("dones", data=done)
        if "robot_states" in demo.attrs:
            group.create_dataset("robot_states", data=np.asarray(demo.attrs["robot_states"]))
        group.attrs["num_samples"] = n
        group.attrs["model_file"] = demo.model_file
        group.attrs["init_state"] = demo.states[0] if len(demo.states) else np.zeros(0)
        for key, value in demo.attrs.items():
            if key != "robot_states" and value is not None:
                group.attrs[key] = value
        self.num_demos += 1
        self.total += n
        self._file.flush()

    def close(self) -> Path:
        """Finalise the attributes and move the file into place; returns the final path."""
        self._data.attrs["num_demos"] = self.num_demos
        self._data.attrs["total"] = self.total
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file (the final path is untouched)."""
        self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "DemoWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class DemoFile:
    """Read access to one LIBERO-format HDF5 file (ours or LIBERO's official datasets)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"demo file {self.path} does not exist; create it with `tgrpo collect-demos`")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DatasetError(f"{self.path} is not a readable HDF5 file ({exc})") from None
        if "data" not in self._file:
            self._file.close()
            raise DatasetError(f"{self.path} has no 'data' group; it is not a LIBERO-format demo file")
        data = self._file["data"]
        self.demo_keys = sorted((k for k in data.keys() if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))
        if not self.demo_keys:
            raise DatasetError(f"{self.path} contains no demo_K groups under 'data'")
        try:
            problem = json.loads(data.attrs["problem_info"])
            env_args = json.loads(data.attrs.get("env_args", "{}"))
        except (KeyError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{self.path}: attribute data.problem_info is missing or not JSON ({exc})") from None
        self.info = DemoFileInfo(
            problem_name=str(problem.get("problem_name", "")),
            language_instruction=str(problem.get("language_instruction", "")),
            bddl_file_name=str(data.attrs.get("bddl_file_name", "")),
            env_args=env_args,
            num_demos=len(self.demo_keys),
            total=int(sum(data[k]["actions"].shape[0] for k in self.demo_keys if "actions" in data[k])),
        )

    def __len__(self) -> int:
        return len(self.demo_keys)

    def _require(self, group: h5py.Group, key: str) -> h5py.Dataset:
        if key not in group:
            raise DatasetError(f"{self.path}: {group.name} has no '{key}' dataset (LIBERO layout expected)")
        return group[key]

    def __getitem__(self, index: int) -> Demo:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path} has {len(self)} demos, index {index} is out of range")
        group = self._file["data"][self.demo_keys[index]]
        actions = np.asarray(self._require(group, "actions"), dtype=np.float32)
        obs_group = group["obs"] if "obs" in group else None
        if obs_group is None:
            raise DatasetError(f"{self.path}: {group.name} has no 'obs' group (LIBERO layout expected)")
        obs = {k: np.asarray(self._require(obs_group, k)) for k in REQUIRED_OBS_KEYS}
        if "ee_states" in obs_group:
            obs["ee_states"] = np.asarray(obs_group["ee_states"])
        for key, value in obs.items():
            if len(value) != len(actions):
                raise DatasetError(f"{self.path}: {group.name}/obs/{key} has {len(value)} rows but actions has "
                                   f"{len(actions)}")
        attrs = {k: v for k, v in group.attrs.items() if k not in ("model_file", "init_state", "num_samples")}
        return Demo(
            actions=actions,
            obs=obs,
            states=np.asarray(group["states"]) if "states" in group else np.zeros((0, 0)),
            model_file=str(group.attrs.get("model_file", "")),
            attrs=attrs,
        )

    def __iter__(self) -> Iterator[Demo]:
        for i in range(len(self)):
            yield self[i]

    def fingerprint(self) -> str:
        """SHA-256 over every demo's name, ``actions`` and ``states`` (the simulator states step by step).

        Two files with the same fingerprint hold the same trajectories in the same order; the rest (images,
        proprioception) is rendered or read from those states. Attributes such as LIBERO's ``date`` are left
        out, so a file collected again with the same expert and seeds gets the same fingerprint."""
        digest = hashlib.sha256()
        for key in self.demo_keys:
            group = self._file["data"][key]
            digest.update(key.encode())
            for name in ("actions", "states"):
                if name in group:
                    array = np.ascontiguousarray(group[name])
                    digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
                    digest.update(array.tobytes())
        return digest.hexdigest()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "DemoFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_task_demo_file(path: str | os.PathLike, task: TaskInfo) -> Path:
    """The demo file of ``task``: ``path`` itself if it is a file, else LIBERO's name under ``path``, else
    the first ``*.hdf5`` below ``path`` whose instruction is the task's. ``task``: a TaskInfo, or anything
    with its ``suite``, ``name``, ``language`` and ``task_id``."""
    root = Path(path)
    if root.is_file():
        return root
    named = default_demo_path(root, task.suite, task.name)
    if named.exists():
        return named
    for candidate in sorted(root.rglob("*.hdf5")) if root.is_dir() else []:
        with DemoFile(candidate) as f:
            if f.info.language_instruction == task.language:
                return candidate
    raise DatasetError(f"no demo file for task '{task.language}' under {root}; collect them with "
                       f"`tgrpo collect-demos --suite {task.suite} --tasks {task.task_id}`")


def load_task_demos(path: str | os.PathLike, task: TaskInfo, limit: int) -> tuple[Path, list[Demo]]:
    """The first ``limit`` demos of ``task``'s demo file (see :func:`find_task_demo_file`)."""
    found = find_task_demo_file(path, task)
    with DemoFile(found) as f:
        return found, [f[i] for i in range(min(len(f), limit))]
