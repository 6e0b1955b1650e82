"""The main job (``tgrpo pipeline``): collect demos -> SFT -> TGRPO -> evaluation -> report.

Each stage writes into its own directory under ``out`` and is skipped or resumed when its output is
already there, so rerunning the command after an interruption continues where it stopped. The report
(``report.md`` and ``learning_curve.png``) compares the SFT policy and the TGRPO policy on the same
held-out fixed initial states.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tgrpo.config import apply_overrides, train_config_from_dict
from tgrpo.data.collect import collect_task
from tgrpo.envs.libero_env import resolve_task
from tgrpo.errors import ConfigError
from tgrpo.evaluation import wilson_interval
from tgrpo.plotting import pyplot
from tgrpo.policy.config import PolicyConfig
from tgrpo.sft import SFTConfig, train_sft


@dataclass(frozen=True)
class PipelineConfig:
    """The end-to-end run on one task.

    Attributes:
        suite, task: the task.
        out: run root (demos/, sft/, tgrpo/, report.md, learning_curve.png).
        num_demos: expert demonstrations collected for SFT.
        sft_steps: behaviour-cloning steps (batch 32). 600 steps on one task's demos already gives a
            policy that succeeds on some held-out states, which is what the RL stage needs.
        iterations: TGRPO iterations (one group of ``rollout.group_size`` episodes each).
        eval_every: TGRPO iterations between held-out evaluations; None evaluates only the SFT policy
            (before) and the final one (after). Each evaluation episode costs about 30 s on 2 cores.
        eval_init_states: held-out fixed init states for every evaluation.
        num_envs: environment workers for demo collection.
        seed: seed of everything.
        train_overrides: extra TrainConfig fields as ``key=value`` strings (e.g. ``"algo.lr=3e-5"``).

    The defaults finish in about 41 minutes on an otherwise idle 2-core CPU machine (measured end to end,
    docs/results.md): demos 5 min, SFT 4 min, TGRPO with its two evaluations 32 min. The experiments of
    docs/results.md use more of everything.
    """

    suite: str = "libero_object"
    task: int | str = 0
    out: str = "runs/pipeline"
    num_demos: int = 25
    sft_steps: int = 600
    iterations: int = 8
    eval_every: int | None = None
    eval_init_states: tuple[int, ...] = tuple(range(40, 50))
    num_envs: int = 2
    seed: int = 0
    train_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_demos", "sft_steps", "iterations", "num_envs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1 or None (before and after only), got {self.eval_every}")
        if not self.eval_init_states:
            raise ConfigError("eval_init_states is empty: the report compares SFT and TGRPO on these states")


def _stage(name: str) -> None:
    print(f"\n=== {name} ===", file=sys.stderr, flush=True)


def plot_learning_curve(history: list[dict], evals: list[dict], path: Path, title: str) -> None:
    """Group success and return per iteration, and held-out success at each evaluation, as a PNG."""
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    its = [h["iteration"] for h in history]
    ax1.plot(its, [h["reward/return_mean"] for h in history], label="group mean return")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("return (sum of R_t)")
    ax1b = ax1.twinx()
    ax1b.plot(its, [h["rollout/success_rate"] for h in history], color="tab:green", alpha=0.6, label="group success")
    ax1b.set_ylim(-0.05, 1.05)
    ax1.set_title("training groups")
    ax2.plot([e["iteration"] for e in evals], [100 * e["success_rate"] for e in evals], marker="o")
    ax2.set_xlabel("iteration (0 = SFT)")
    ax2.set_ylabel("held-out success (%)")
    ax2.set_ylim(-5, 105)
    ax2.set_title("evaluation (greedy, held-out init states)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _rate(e: dict) -> str:
    lo, hi = wilson_interval(e["successes"], e["episodes"])
    return f"{e['successes']}/{e['episodes']} ({100 * e['success_rate']:.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}%"


def run_pipeline(cfg: PipelineConfig) -> dict:
    from tgrpo.train import train

    t0 = time.perf_counter()
    out = Path(cfg.out)
    task_id = resolve_task(cfg.suite, cfg.task)
    timings: dict[str, float] = {}

    _stage(f"1/3 scripted-expert demos: {cfg.num_demos} episodes of {cfg.suite} task {task_id}")
    t = time.perf_counter()
    result = collect_task(cfg.suite, task_id, out / "demos", cfg.num_demos, num_envs=cfg.num_envs, seed=cfg.seed)
    demo_path = result.path
    timings["demos_s"] = time.perf_counter() - t

    _stage(f"2/3 supervised fine-tuning: {cfg.sft_steps} steps")
    t = time.perf_counter()
    sft_out = out / "sft"
    if not (sft_out / "sft_summary.json").exists():
        train_sft(SFTConfig(data=(str(demo_path),), out=str(sft_out), steps=cfg.sft_steps, seed=cfg.seed,
                            eval_every=max(1, cfg.sft_steps // 5), save_every=max(1, cfg.sft_steps // 10),
                            policy=PolicyConfig(seed=cfg.seed)))
    timings["sft_s"] = time.perf_counter() - t
    sft_ckpt = sft_out / "best" if (sft_out / "best").exists() else sft_out / "checkpoint"

    _stage(f"3/3 TGRPO: {cfg.iterations} iterations, evaluating on init states {cfg.eval_init_states[0]}.."
           f"{cfg.eval_init_states[-1]} before and after" + (f" and every {cfg.eval_every}" if cfg.eval_every else ""))
    t = time.perf_counter()
    eval_every = cfg.eval_every or cfg.iterations
    data = {"suite": cfg.suite, "task": task_id, "demos": str(demo_path), "iterations": cfg.iterations,
            "eval_every": eval_every, "eval_init_states": list(cfg.eval_init_states), "out": str(out / "tgrpo"),
            "seed": cfg.seed, "policy": {"checkpoint": str(sft_ckpt)}}
    summary = train(train_config_from_dict(apply_overrides(data, list(cfg.train_overrides))))
    timings["tgrpo_s"] = time.perf_counter() - t

    state = json.loads((out / "tgrpo" / "checkpoint" / "trainer_state.json").read_text())
    evals, history = state["evals"], state["history"]
    plot_learning_curve(history, evals, out / "learning_curve.png", f"{cfg.suite} task {task_id}: {summary['task']}")
    before, after = evals[0], evals[-1]
    timings["total_s"] = time.perf_counter() - t0
    lines = [
        f"# tgrpo pipeline: {cfg.suite} task {task_id} ({summary['task']})", "",
        f"Held-out fixed init states {cfg.eval_init_states[0]}..{cfg.eval_init_states[-1]} "
        f"({after['episodes']} episodes, greedy decoding, LIBERO protocol).", "",
        "| policy | success | 95% CI |", "|---|---|---|",
        f"| SFT ({cfg.num_demos} demos, {cfg.sft_steps} steps) | {_rate(before)} |",
        f"| TGRPO ({cfg.iterations} iterations) | {_rate(after)} |", "",
        "![learning curve](learning_curve.png)", "",
        "Wall time: " + ", ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in timings.items()), "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines[:9]))
    return {"before": before, "after": after, "timings": timings}
