"""User-facing errors: each message names the bad value and what would have been valid."""

from __future__ import annotations

from typing import Iterable


class TgrpoError(Exception):
    """An error caused by input the user can fix. The CLI prints its message without a traceback."""


class ConfigError(TgrpoError, ValueError):
    """An invalid configuration value."""


class DatasetError(TgrpoError):
    """A missing or malformed dataset file."""


class SimulationError(TgrpoError):
    """The simulator failed during an episode (e.g. MuJoCo instability); the episode is invalid."""


class StopRequested(TgrpoError):
    """SIGINT or SIGTERM arrived: the run stops; its last complete checkpoint is kept."""


def choice_error(what: str, value: object, valid: Iterable[object]) -> ConfigError:
    """Build the standard 'unknown X' error listing the valid choices."""
    valid = list(valid)
    return ConfigError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, valid))}")


def range_error(what: str, value: object, low: int, high: int) -> ConfigError:
    """Build the standard 'out of range' error for an index in [low, high]."""
    return ConfigError(f"{what} {value!r} is out of range; valid: {low}..{high}")
