"""Reference keyposes from successful demonstrations (paper section 3.1: ``P_pose`` from demos).

Events are read from the demo's gripper actions: a *grasp* when the gripper command turns to close, a
*release* when it turns back to open (or the demo's last step, when it ends successfully still holding). The demo's recorded simulator state at each event is restored in
an environment of the task, and the end-effector position is stored relative to the stage's anchor:
the grasped object (grasp), the target the object is released over (release), or for articulated
parts the part's origin at the first step the joint moves (contact).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from tgrpo.data.hdf5 import Demo
from tgrpo.envs.libero_env import LiberoEnv
from tgrpo.envs.scene import SceneView
from tgrpo.reward.dense import Keyposes, target_centre
from tgrpo.reward.stages import Stage

JOINT_MOTION = 0.01  # joint displacement (m or rad) that counts as "the part started to move"


def gripper_events(actions: np.ndarray) -> tuple[list[int], list[int]]:
    """Steps where the gripper command switches to close (> 0) and back to open (<= 0)."""
    closed = np.asarray(actions)[:, 6] > 0
    closes = [t for t in range(len(closed)) if closed[t] and (t == 0 or not closed[t - 1])]
    opens = [t for t in range(1, len(closed)) if not closed[t] and closed[t - 1]]
    return closes, opens


def demo_keyposes(demo: Demo, env: LiberoEnv, stages: list[Stage]) -> Keyposes:
    """Keyposes of one demo: the k-th grasp event goes with the k-th grasped object of ``stages``."""
    out = Keyposes()
    if len(demo.states) != len(demo):
        return out  # a file without simulator states cannot be replayed
    closes, opens = gripper_events(demo.actions)
    picks = [s for s in stages if s.kind == "grasp"]
    places = [s for s in stages if s.kind == "place"]
    for k, (grasp, place) in enumerate(zip(picks, places)):
        if k >= len(closes):
            break
        obs = env.restore(demo.states[closes[k]])
        view = SceneView(env.task, obs.scene, obs.state)
        out.grasp[grasp.object] = view.ee - view.pos(grasp.object)
        # released at the next open event; a demo that ends (successfully) still holding it: its last step
        release = next((t for t in opens if t > closes[k]), len(demo) - 1)
        obs = env.restore(demo.states[release])
        view = SceneView(env.task, obs.scene, obs.state)
        out.release[place.target] = view.ee - target_centre(view, place.target)
    for stage in (s for s in stages if s.kind == "actuate"):
        start = env.restore(demo.states[0])
        q0 = SceneView(env.task, start.scene, start.state).qpos(stage.joint)
        for t in range(1, len(demo)):
            obs = env.restore(demo.states[t])
            view = SceneView(env.task, obs.scene, obs.state)
            if abs(view.qpos(stage.joint) - q0) > JOINT_MOTION:
                part = obs.scene.parts[stage.joint]
                out.contact[stage.joint] = view.ee - part.pos
                break
    return out


def average_keyposes(per_demo: Iterable[Keyposes]) -> Keyposes:
    """Mean offset per anchor over the demos that had the event; ``demos`` counts them."""
    sums: dict[tuple[str, str], list[np.ndarray]] = {}
    for kp in per_demo:
        for kind in ("grasp", "release", "contact"):
            for name, v in getattr(kp, kind).items():
                sums.setdefault((kind, name), []).append(np.asarray(v))
    out = Keyposes()
    for (kind, name), values in sums.items():
        getattr(out, kind)[name] = np.mean(values, axis=0)
        out.demos[f"{kind}:{name}"] = len(values)
    return out


def extract_keyposes(demos: Iterable[Demo], env: LiberoEnv, stages: list[Stage]) -> Keyposes:
    """Average keyposes over ``demos`` (successful demonstrations of ``env``'s task)."""
    return average_keyposes(demo_keyposes(d, env, stages) for d in demos)


def replay(demo: Demo, env: LiberoEnv):
    """Privileged states of a demo, restored step by step: (states with leading dims (1, T), scene)."""
    from tgrpo.envs.libero_env import PrivilegedState

    if len(demo.states) == 0:
        raise ValueError("the demo has no recorded simulator states to replay")
    observations = [env.restore(s) for s in demo.states]
    return PrivilegedState.stack([PrivilegedState.stack([o.state for o in observations])]), observations[0].scene
