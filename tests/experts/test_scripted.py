"""Tests of the privileged-state scripted expert."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tgrpo.envs import EnvConfig, LiberoEnv, TaskInfo
from tgrpo.errors import ConfigError
from tgrpo.experts import ScriptedExpert, supports
from tgrpo.experts.scripted import DOWN, front_orientation, rotation_error


def _task(goal: tuple[tuple[str, ...], ...]) -> TaskInfo:
    return TaskInfo(suite="libero_10", task_id=9, name="made_up_task", language="close the microwave",
                    bddl_file="/nonexistent.bddl", goal_predicates=goal, object_names=("mug_1",),
                    fixture_names=("microwave_1",), articulation_names=("microwave_1_microjoint",), max_steps=520)


def test_unsupported_predicate_raises_naming_task_and_predicate() -> None:
    task = _task((("close", "microwave_1"),))
    assert not supports(task)
    with pytest.raises(ConfigError, match=r"made_up_task.*'close', 'microwave_1'"):
        ScriptedExpert(task)


def test_drawer_close_is_supported_but_not_other_fixtures() -> None:
    drawer = "wooden_cabinet_1_bottom_region"
    assert supports(_task((("close", drawer), ("in", "mug_1", drawer))))
    assert not supports(_task((("close", "microwave_1"),)))


def test_front_orientation_points_fingers_and_closes_along_the_given_axes() -> None:
    approach, closing = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    rot = front_orientation(approach, closing, current=DOWN)
    assert np.allclose(rot.T @ rot, np.eye(3)) and np.isclose(np.linalg.det(rot), 1.0)
    assert np.allclose(rot[:, 2], approach) and np.allclose(np.abs(rot[:, 0]), np.abs(closing))
    # of the two symmetric choices, the one a pure 90-degree turn away from the robot's top-down rest pose
    assert np.isclose(np.linalg.norm(rotation_error(rot, DOWN)), np.pi / 2)


def test_act_without_scene_geometry_raises() -> None:
    expert = ScriptedExpert(_task((("in", "mug_1", "microwave_1_heating_region"),)))
    expert.reset()
    with pytest.raises(ConfigError, match="scene_geometry"):
        expert.act(None)  # type: ignore[arg-type]


@pytest.mark.sim
def test_solves_libero_object_task0_from_fixed_init_state() -> None:
    start = time.time()
    with LiberoEnv(EnvConfig(suite="libero_object", task=0, cameras=())) as env:
        expert = ScriptedExpert(env.task)
        obs = env.reset(init_state=0)
        expert.reset(env.scene_geometry())
        for _ in range(env.task.max_steps):
            action = expert.act(obs.state)
            assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
            obs = env.step(action)
            if obs.success:
                break
    assert obs.success, f"not solved within {env.task.max_steps} steps"
    assert time.time() - start < 30.0


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("suite, task", [("libero_goal", 0), ("libero_10", 3)])
def test_opens_and_closes_drawers_from_a_random_placement(suite: str, task: int) -> None:
    """libero_goal 0: open the middle drawer; libero_10 3: bowl into the open bottom drawer, then close it."""
    with LiberoEnv(EnvConfig(suite=suite, task=task, cameras=())) as env:
        expert = ScriptedExpert(env.task)
        obs = env.reset(seed=0)
        expert.reset(env.scene_geometry())
        for _ in range(env.task.max_steps):
            obs = env.step(expert.act(obs.state))
            if obs.success:
                break
    assert obs.success, f"{suite} task {task} not solved within {env.task.max_steps} steps"
