"""LIBERO environments: suites, configuration and the typed environment wrapper."""

from tgrpo.envs.config import CAMERA_NAMES, EnvConfig
from tgrpo.envs.libero_env import (
    LiberoEnv,
    Observation,
    PrivilegedState,
    TaskInfo,
    axis_angle_from_quat,
    load_init_states,
    resolve_task,
    task_names,
)
from tgrpo.envs.suites import NUM_SETTLE_STEPS, SETTLE_ACTION, SUITES, SuiteSpec, get_suite

__all__ = [
    "CAMERA_NAMES", "EnvConfig", "LiberoEnv", "NUM_SETTLE_STEPS", "Observation", "PrivilegedState",
    "SETTLE_ACTION", "SUITES", "SuiteSpec", "TaskInfo", "axis_angle_from_quat", "get_suite",
    "load_init_states", "resolve_task", "task_names",
]
