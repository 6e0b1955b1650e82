"""Geometric queries on one privileged state of a scene: object boxes, region centres, articulated parts.

Shared by the scripted experts and the dense reward; everything is computed from ``PrivilegedState``
and the episode's ``SceneGeometry`` (read once after a reset).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tgrpo.envs.libero_env import PrivilegedState, SceneGeometry, TaskInfo


def quat_to_mat(quat: np.ndarray) -> np.ndarray:
    """(4,) xyzw quaternion -> (3, 3) rotation matrix."""
    x, y, z, w = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def box_gap(points: np.ndarray, boxes: np.ndarray) -> float:
    """Smallest 2-d distance between any of ``points`` (..., 2) and any of the axis-aligned ``boxes``
    (M, 2, 2) (0 inside one; infinite without boxes)."""
    if len(boxes) == 0:
        return np.inf
    p = np.reshape(points, (-1, 1, 2))
    gap = np.maximum(np.maximum(boxes[:, 0] - p, p - boxes[:, 1]), 0.0)
    return float(np.min(np.linalg.norm(gap, axis=-1)))


def segment_box_distance(a: np.ndarray, b: np.ndarray, box: np.ndarray, samples: int = 9) -> float:
    """Approximate 2-d distance between segment ``a``-``b`` and the axis-aligned box ``box`` (2, 2)."""
    return box_gap(a + np.linspace(0.0, 1.0, samples)[:, None] * (b - a), box[None])


def gripper_opening(state: PrivilegedState) -> float:
    """Distance between the fingers' joint positions (about 0.08 open, 0.002 closed on nothing)."""
    return float(state.gripper_qpos[0] - state.gripper_qpos[1])


class SceneView:
    """Geometry queries on one privileged state: world-frame boxes, regions and parts of the scene."""

    def __init__(self, task: TaskInfo, geometry: SceneGeometry, state: PrivilegedState):
        self.task, self.geometry, self.state = task, geometry, state
        self._index = {name: i for i, name in enumerate(task.body_names)}

    @property
    def ee(self) -> np.ndarray:
        return self.state.ee_pos

    def pos(self, name: str) -> np.ndarray:
        return self.state.object_pos[self._index[name]]

    def rot(self, name: str) -> np.ndarray:
        """(3, 3) world rotation of the body."""
        return quat_to_mat(self.state.object_quat[self._index[name]])

    def corners(self, name: str) -> np.ndarray:
        """(8, 3) world corners of the body's collision box."""
        lo, hi = self.geometry.bounds[name]
        local = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
        return self.pos(name) + local @ self.rot(name).T

    def box(self, name: str) -> np.ndarray:
        """(2, 3) world axis-aligned box around the body."""
        c = self.corners(name)
        return np.stack([c.min(0), c.max(0)])

    def centre(self, name: str) -> np.ndarray:
        return self.box(name).mean(0)

    def width_along(self, name: str, direction: np.ndarray) -> float:
        """Horizontal extent of the body along a unit xy direction."""
        proj = self.corners(name)[:, :2] @ direction
        return float(proj.max() - proj.min())

    def others(self, *exclude: str) -> list[str]:
        return [n for n in self.task.body_names if n not in exclude and n in self.geometry.bounds]

    def region_centre(self, name: str) -> np.ndarray:
        """World centre of a region, following its parent body and its drawer's slide."""
        region = self.geometry.regions[name]
        centre = region.offset + (self.pos(region.parent) if region.parent else 0.0)
        for joint in region.joints:
            part = self.geometry.parts[joint]
            centre = centre + part.axis * (self.qpos(joint) - part.qpos)
        return np.asarray(centre, dtype=np.float64)

    def qpos(self, joint: str) -> float:
        return float(self.state.articulation_qpos[self.task.articulation_names.index(joint)])

    def part_box(self, joint: str) -> np.ndarray:
        """(2, 3) world box of an articulated part at the joint's current position (slide joints)."""
        part = self.geometry.parts[joint]
        origin = part.pos + part.axis * (self.qpos(joint) - part.qpos)
        return origin + part.bounds

    def surface_height(self, xy: np.ndarray, exclude: Sequence[str]) -> float:
        """Highest top of the bodies whose footprint contains ``xy`` (the floor/table height if none)."""
        tops = [b[1, 2] for b in map(self.box, self.others(*exclude))
                if np.all(xy >= b[0, :2]) and np.all(xy <= b[1, :2])]
        return max(tops, default=float(np.min(self.state.object_pos[:, 2])))

    def clear_height(self, a: np.ndarray, b: np.ndarray, exclude: Sequence[str], margin: float = 0.08) -> float:
        """Highest top of the bodies within ``margin`` of the xy path from ``a`` to ``b``."""
        tops = [box[1, 2] for box in map(self.box, self.others(*exclude))
                if segment_box_distance(a[:2], b[:2], box[:, :2]) < margin]
        return max(tops, default=float(min(a[2], b[2])))
