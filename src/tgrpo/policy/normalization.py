"""Per-dimension action normalisation with q01/q99 bounds (OpenVLA's ``BOUNDS_Q99``).

``normalize(x) = clip(2 * (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)`` on the masked dimensions; the
gripper dimension is left as is (LIBERO's gripper action is already -1 open / +1 close).
``unnormalize(n) = 0.5 * (n + 1) * (q99 - q01) + q01`` on the same dimensions. Statistics are computed
from the demonstrations and saved beside the checkpoint as ``dataset_statistics.json``, under ``action``
and, for a policy that sees proprioception, ``proprio`` (normalised the same way, every dimension).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tgrpo.errors import DatasetError

STATS_FILE = "dataset_statistics.json"


@dataclass
class ActionNormalizer:
    """Attributes: q01, q99: (D,) quantile bounds; mask: (D,) bool, True where normalisation applies."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    @classmethod
    def fit(cls, actions: np.ndarray, gripper_dim: int | None = 6) -> "ActionNormalizer":
        """Statistics of (T, D) actions; ``gripper_dim`` is left unnormalised (None: normalise every dim)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or len(actions) < 2 or not np.isfinite(actions).all():
            raise DatasetError(f"need a (T, D) array of finite actions with T >= 2 to fit statistics, got "
                               f"shape {actions.shape}")
        mask = np.ones(actions.shape[1], dtype=bool)
        if gripper_dim is not None:
            mask[gripper_dim] = False
        return cls(np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0), mask)

    @classmethod
    def identity(cls, dim: int = 7) -> "ActionNormalizer":
        return cls(-np.ones(dim), np.ones(dim), np.zeros(dim, dtype=bool))

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float64)
        n = np.clip(2.0 * (a - self.q01) / (self.q99 - self.q01 + 1e-8) - 1.0, -1.0, 1.0)
        return np.where(self.mask, n, a).astype(np.float32)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        n = np.asarray(normalized, dtype=np.float64)
        a = 0.5 * (n + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, a, n).astype(np.float32)

    def save(self, directory: str | Path, key: str = "action") -> Path:
        """Write the statistics under ``key`` of ``dataset_statistics.json``, keeping its other keys."""
        path = Path(directory) / STATS_FILE
        payload = json.loads(path.read_text()) if path.exists() else {}
        payload[key] = {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}
        path.write_text(json.dumps(payload, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path, key: str = "action") -> "ActionNormalizer":
        path = Path(directory) / STATS_FILE
        try:
            stats = json.loads(path.read_text())[key]
            out = cls(np.asarray(stats["q01"], float), np.asarray(stats["q99"], float), np.asarray(stats["mask"], bool))
        except FileNotFoundError:
            raise DatasetError(f"{path} is missing: a checkpoint needs its action statistics beside it") from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path} is malformed (expected {key}.q01/q99/mask lists): {exc}") from None
        if not (out.q01.shape == out.q99.shape == out.mask.shape):
            raise DatasetError(f"{path}: q01, q99 and mask have different lengths")
        return out
