"""Tests of the privileged-state scripted expert."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tgrpo.envs import EnvConfig, LiberoEnv, TaskInfo
from tgrpo.envs.libero_env import RegionGeometry, SceneGeometry
from tgrpo.errors import ConfigError
from tgrpo.experts import ScriptedExpert, supports
from tgrpo.experts.scripted import DOWN, front_orientation, plan_for, rotation_error


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


def _plate_scene(obj: str) -> tuple[TaskInfo, SceneGeometry]:
    """libero_goal 5's goal (push the plate to the front of the stove) for ``obj``, with its plate and bowl."""
    task = TaskInfo(suite="libero_goal", task_id=5, name="push_the_plate_to_the_front_of_the_stove",
                    language="push the plate to the front of the stove", bddl_file="/nonexistent.bddl",
                    goal_predicates=(("on", obj, "main_table_stove_front_region"),),
                    object_names=("akita_black_bowl_1", "plate_1"), fixture_names=("main_table",), max_steps=300)
    bounds = {"plate_1": np.array([[-0.068, -0.068, -0.0025], [0.07, 0.069, 0.0164]]),
              "akita_black_bowl_1": np.array([[-0.053, -0.053, 0.0], [0.053, 0.053, 0.05]])}
    region = RegionGeometry(parent=None, offset=np.array([-0.05, 0.21, 0.895]), half_size=np.array([0.04, 0.04, 0.007]))
    return task, SceneGeometry(bounds=bounds, regions={"main_table_stove_front_region": region}, parts={})


@pytest.mark.parametrize("obj, skills", [("plate_1", ["push"]), ("akita_black_bowl_1", ["pick", "place"])])
def test_a_plate_is_pushed_to_a_table_region_and_a_bowl_carried(obj: str, skills: list[str]) -> None:
    """libero_goal 5: the plate is too wide to grasp (and has no rim to hold), so the plan pushes it."""
    task, geometry = _plate_scene(obj)
    plan = plan_for(task)(geometry)
    assert [skill.build.__qualname__.split(".")[0] for skill in plan] == skills


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


def _assert_solves_seeded_placement(suite: str, task: int, seed: int = 0) -> None:
    """One episode from the seeded random placement ``seed`` succeeds within the suite's max steps."""
    with LiberoEnv(EnvConfig(suite=suite, task=task, cameras=())) as env:
        expert = ScriptedExpert(env.task)
        obs = env.reset(seed=seed)
        expert.reset(env.scene_geometry())
        for _ in range(env.task.max_steps):
            obs = env.step(expert.act(obs.state))
            if obs.success:
                break
    assert obs.success, f"{suite} task {task} not solved within {env.task.max_steps} steps"


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("suite, task", [("libero_goal", 0), ("libero_10", 3)])
def test_opens_and_closes_drawers_from_a_random_placement(suite: str, task: int) -> None:
    """libero_goal 0: open the middle drawer; libero_10 3: bowl into the open bottom drawer, then close it."""
    _assert_solves_seeded_placement(suite, task)


@pytest.mark.sim
def test_pushes_the_plate_to_the_front_of_the_stove_from_a_random_placement() -> None:
    """libero_goal 5, seed 0 (about 160 steps)."""
    _assert_solves_seeded_placement("libero_goal", 5)
