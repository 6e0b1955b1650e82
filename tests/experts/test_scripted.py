"""Tests of the privileged-state scripted expert."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tgrpo.envs import EnvConfig, LiberoEnv, TaskInfo
from tgrpo.errors import ConfigError
from tgrpo.experts import ScriptedExpert, supports


def _task(goal: tuple[tuple[str, ...], ...]) -> TaskInfo:
    return TaskInfo(suite="libero_10", task_id=9, name="made_up_task", language="close the microwave",
                    bddl_file="/nonexistent.bddl", goal_predicates=goal, object_names=("mug_1",),
                    fixture_names=("microwave_1",), articulation_names=("microwave_1_microjoint",), max_steps=520)


def test_unsupported_predicate_raises_naming_task_and_predicate() -> None:
    task = _task((("close", "microwave_1"),))
    assert not supports(task)
    with pytest.raises(ConfigError, match=r"made_up_task.*'close', 'microwave_1'"):
        ScriptedExpert(task)


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
