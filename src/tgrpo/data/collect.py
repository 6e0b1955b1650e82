"""Collect scripted-expert demonstrations into LIBERO-format HDF5 files (``tgrpo collect-demos``).

Demonstrations start from seeded *random* placements sampled from each task's BDDL regions, never from
LIBERO's 50 fixed initial states, so those stay held out for evaluation, as in LIBERO itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from tgrpo.envs.config import EnvConfig
from tgrpo.envs.libero_env import Observation, axis_angle_from_quat, resolve_task, task_names
from tgrpo.data.hdf5 import DATASET_IMAGE_KEYS, Demo, DemoWriter, default_demo_path
from tgrpo.errors import ConfigError, TgrpoError
from tgrpo.rollout.engine import rollout_group
from tgrpo.rollout.types import GroupRollout, PolicyStep
from tgrpo.rollout.workers import EnvPool, with_worker_retries

class ExpertGroupPolicy:
    """Runs one scripted expert per environment of a group (the rollout engine's policy interface)."""

    def __init__(self, task):
        from tgrpo.experts import ScriptedExpert

        self.task = task
        self._make = ScriptedExpert
        self.experts: list = []

    def reset(self, num_envs: int) -> None:
        self.experts = [self._make(self.task) for _ in range(num_envs)]

    def act(self, observations: Sequence[Observation], instruction: str, env_ids: np.ndarray) -> PolicyStep:
        for i, o in zip(env_ids, observations):
            if o.scene is not None:  # the first observation of an episode carries its scene geometry
                self.experts[i].reset(o.scene)
        actions = np.stack([self.experts[i].act(o.state) for i, o in zip(env_ids, observations)])
        return PolicyStep(actions=actions.astype(np.float32))


def demo_from_rollout(rollout: GroupRollout, row: int, model_xml: str = "") -> Demo:
    """Convert one row of a group rollout into a LIBERO-format demo (observation before each action)."""
    n = int(rollout.lengths[row])
    s = rollout.states.index((row, slice(0, n)))
    ee_ori = axis_angle_from_quat(s.ee_quat)
    obs = {DATASET_IMAGE_KEYS[c]: img[row, :n].numpy() for c, img in rollout.images.items()}
    obs.update(
        ee_pos=s.ee_pos, ee_ori=ee_ori, ee_states=np.concatenate([s.ee_pos, ee_ori], axis=-1),
        gripper_states=s.gripper_qpos, joint_states=s.joint_pos,
    )
    return Demo(
        actions=rollout.actions[row, :n].numpy(),
        obs=obs,
        states=s.sim_state,
        model_file=model_xml,
        attrs={"seed": rollout.seeds[row], "robot_states": np.concatenate([s.gripper_qpos, s.ee_pos, s.ee_quat], -1)},
    )


@dataclass
class CollectResult:
    """Outcome of collecting demos for one task."""

    task_id: int
    task_name: str
    path: Path | None
    demos: int
    attempts: int
    mean_length: float
    skipped: bool = False


def collect_task(
    suite: str,
    task: int | str,
    out_dir: str | Path,
    num_demos: int,
    num_envs: int = 2,
    image_size: int = 128,
    seed: int = 0,
    max_attempts: int | None = None,
    overwrite: bool = False,
) -> CollectResult:
    """Collect ``num_demos`` successful expert episodes of one task into ``<out_dir>/<suite>/<task>_demo.hdf5``.

    Episodes are rolled out ``num_envs`` at a time from random placements with seeds
    ``seed * 100_000 + task_id * 1_000 + k``; failed episodes are dropped. An existing file is kept
    (reported as skipped) unless ``overwrite``.
    """
    if num_demos < 1:
        raise ConfigError(f"num_demos must be at least 1, got {num_demos}")
    task_id = resolve_task(suite, task)
    name = task_names(suite)[task_id]
    path = default_demo_path(out_dir, suite, name)
    if path.exists() and not overwrite:  # decided before any worker starts
        return CollectResult(task_id, name, path, 0, 0, 0.0, skipped=True)
    max_attempts = max_attempts or 2 * num_demos + 4
    config = EnvConfig(suite=suite, task=task_id, cameras=("agentview", "wrist"), image_size=image_size)
    with EnvPool(config, num_envs=num_envs) as pool:
        info = pool.task
        policy = ExpertGroupPolicy(info)
        env_kwargs = {"camera_heights": image_size, "camera_widths": image_size,
                      "camera_names": ["agentview", "robot0_eye_in_hand"], "control_freq": 20}
        lengths: list[int] = []
        attempts = 0
        bar = tqdm(total=num_demos, desc=f"{suite} task {task_id}", unit="demo", file=sys.stderr, leave=True)
        with DemoWriter(path, info, env_kwargs) as writer:
            while writer.num_demos < num_demos and attempts < max_attempts:
                seeds = [seed * 100_000 + task_id * 1_000 + attempts + k for k in range(num_envs)]
                attempts += num_envs
                rollout, _ = with_worker_retries(  # a dead or hung worker is replaced and these episodes rerun
                    pool, lambda: rollout_group(pool, policy, init_state=None, seeds=seeds, stop_rule="all_done"),
                    what="demonstration rollout")
                xmls = pool.model_xml(range(num_envs))
                for row in range(num_envs):
                    if bool(rollout.success[row]) and writer.num_demos < num_demos:
                        writer.add(demo_from_rollout(rollout, row, xmls[row]))
                        lengths.append(int(rollout.lengths[row]))
                        bar.update(1)
                bar.set_postfix(success=f"{writer.num_demos}/{attempts}")
            bar.close()
            if writer.num_demos < num_demos:
                raise TgrpoError(
                    f"the scripted expert solved only {writer.num_demos} of {attempts} episodes of {suite} task "
                    f"{task_id} ({info.name}); nothing was written. See docs/experts.md for supported tasks."
                )
    return CollectResult(task_id, info.name, path, writer.num_demos, attempts, float(np.mean(lengths)))
