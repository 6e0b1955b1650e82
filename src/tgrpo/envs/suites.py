"""The four LIBERO suites this project trains and evaluates on, and their protocol constants."""

from __future__ import annotations

from dataclasses import dataclass

from tgrpo.errors import choice_error


@dataclass(frozen=True)
class SuiteSpec:
    """Protocol constants of one LIBERO suite.

    Attributes:
        name: LIBERO's benchmark name (key of ``benchmark.get_benchmark_dict()``).
        max_steps: policy steps per episode in the LIBERO evaluation protocol (after the settle steps).
        paper_name: column name in the TGRPO paper's tables.
    """

    name: str
    max_steps: int
    paper_name: str


# Max steps per suite: the values of OpenVLA's LIBERO evaluation script, used by the TGRPO paper.
# They are about 1.2-1.5x the longest human demonstration of each suite.
SUITES: dict[str, SuiteSpec] = {
    "libero_spatial": SuiteSpec("libero_spatial", 220, "Spatial"),  # longest demo 193 steps
    "libero_object": SuiteSpec("libero_object", 280, "Object"),  # longest demo 254 steps
    "libero_goal": SuiteSpec("libero_goal", 300, "Goal"),  # longest demo 270 steps
    "libero_10": SuiteSpec("libero_10", 520, "Long"),  # longest demo 505 steps
}

# Steps of the no-op action run after every reset so objects dropped into the scene come to rest.
NUM_SETTLE_STEPS = 10
# The no-op: zero motion, gripper open (-1 = open, +1 = close in LIBERO's action convention).
SETTLE_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
# Number of fixed initial states LIBERO ships per task.
NUM_INIT_STATES = 50
ACTION_DIM = 7


def get_suite(name: str) -> SuiteSpec:
    """Return the spec of suite ``name``; an unknown name lists the valid ones."""
    try:
        return SUITES[name]
    except KeyError:
        raise choice_error("LIBERO suite", name, SUITES) from None
