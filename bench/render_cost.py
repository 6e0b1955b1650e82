"""Rendering cost of a LIBERO step against resolution and MuJoCo visual options (issue 8).

    .venv/bin/python bench/render_cost.py --steps 60 --images docs/img/render_settings.png

One environment in this process (no worker pipe), libero_object task 0 from fixed init state 0, random
actions; for each setting the mean wall time of ``env.step`` over ``--steps`` steps after a warm-up step,
with the agentview and wrist cameras (the default policy's), and without cameras as the floor. The same seed
gives the same states in every setting, so the last agentview frames can be compared pixel by pixel. Settings:

- resolution: 64, 96, 128 (LIBERO's datasets and the default), 224 (OpenVLA's input size);
- at 128: shadows off, reflections off, both off (``mjvScene.flags``), and MSAA off (``offsamples = 0``,
  the offscreen context rebuilt; LIBERO's model asks for 4 samples).

The pixel column shows whether an option changes the image at all: LIBERO's scene lights do not cast
shadows (``light_castshadow`` is false), so the shadow flag has nothing to remove. ``--images`` writes one
agentview frame per 128 px setting side by side.
Prints a Markdown table. Measure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tgrpo.plotting import pyplot

os.environ.setdefault("MUJOCO_GL", "egl")


def _context(env):
    return env._env.sim._render_context_offscreen


def _apply(env, setting: dict) -> None:
    import mujoco

    ctx = _context(env)
    if setting.get("msaa_off"):
        env.set_multisampling(0)
    if setting.get("shadows_off"):
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    if setting.get("reflections_off"):
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def measure(size: int, cameras: tuple[str, ...], setting: dict, steps: int) -> tuple[float, np.ndarray | None]:
    from tgrpo.envs import EnvConfig, LiberoEnv

    rng = np.random.default_rng(0)
    with LiberoEnv(EnvConfig(suite="libero_object", task=0, cameras=cameras, image_size=size)) as env:
        env.reset(init_state=0)
        if cameras:
            _apply(env, setting)
        obs = env.step(np.zeros(7))  # warm-up: buffers, first render
        start = time.perf_counter()
        for _ in range(steps):
            obs = env.step(rng.uniform(-1, 1, 7))
        ms = 1000 * (time.perf_counter() - start) / steps
        return ms, (obs.images.get("agentview") if cameras else None)


SETTINGS = [
    ("no cameras (the floor)", 128, (), {}),
    ("64 px", 64, ("agentview", "wrist"), {}),
    ("96 px", 96, ("agentview", "wrist"), {}),
    ("128 px (default)", 128, ("agentview", "wrist"), {}),
    ("224 px", 224, ("agentview", "wrist"), {}),
    ("128 px, shadows off", 128, ("agentview", "wrist"), {"shadows_off": True}),
    ("128 px, reflections off", 128, ("agentview", "wrist"), {"reflections_off": True}),
    ("128 px, shadows and reflections off", 128, ("agentview", "wrist"), {"shadows_off": True, "reflections_off": True}),
    ("128 px, MSAA off", 128, ("agentview", "wrist"), {"msaa_off": True}),
    ("128 px, all three off", 128, ("agentview", "wrist"),
     {"shadows_off": True, "reflections_off": True, "msaa_off": True}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--images", default=None, help="PNG with one agentview frame per 128 px setting")
    args = p.parse_args()
    print(f"libero_object task 0, init state 0, {args.steps} random steps, one env in-process, "
          f"MUJOCO_GL={os.environ['MUJOCO_GL']}, {os.cpu_count()} CPUs\n")
    print("| setting | ms per step | relative to 128 px | agentview pixels vs 128 px default (mean abs, 0-255) |")
    print("|---|---|---|---|")
    results, frames = {}, []
    for name, size, cams, setting in SETTINGS:
        ms, frame = measure(size, cams, setting, args.steps)
        results[name] = ms
        ref = results.get("128 px (default)")
        diff = (f"{np.abs(frame.astype(float) - frames[0][1].astype(float)).mean():.2f}"
                if frame is not None and size == 128 and frames else "")
        print(f"| {name} | {ms:.1f} | {ms / ref:.2f} | {diff} |" if ref else f"| {name} | {ms:.1f} | | |", flush=True)
        if frame is not None and size == 128:
            frames.append((name, frame))
    if args.images:
        plt = pyplot()

        fig, axes = plt.subplots(1, len(frames), figsize=(2.4 * len(frames), 2.8))
        for ax, (name, frame) in zip(axes, frames):
            ax.imshow(frame[::-1, ::-1])
            ax.set_title(name.replace("128 px, ", "").replace(" and ", "+"), fontsize=7)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.images, dpi=110)
        print(f"\nframes: {args.images}")


if __name__ == "__main__":
    main()
