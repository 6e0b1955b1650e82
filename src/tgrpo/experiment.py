"""Experiment grids (``tgrpo experiment CONFIG``): methods x tasks x seeds, run and aggregated.

A JSON file declares the grid; every run writes into its own directory under ``out``, is skipped or resumed
when its output is already there, and the aggregation reads whatever has finished::

    {
      "out": "runs/exp/object",
      "tasks": ["libero_object:0", "libero_spatial:2"],    # suite:task (index or name)
      "seeds": [0, 1],
      "demos": {"root": "data/demos", "num_demos": 50},     # collected if missing
      "sft": {"steps": 2000, "checkpoints": {"libero_object": {"0": "runs/sft_obj3/best"}}},
      "train": {"iterations": 16},                          # TrainConfig fields, as `tgrpo train --config`
      "eval": {"init_states": "0-49", "num_envs": 4},
      "methods": [
        {"name": "TGRPO"},
        {"name": "GRPO (w/o step)", "overrides": {"algo.advantage": "grpo"}},
        {"name": "a1={algo.a1}", "sweep": {"algo.a1": [0.1, 0.5], "algo.a2": [0.9, 0.5]},
         "tasks": ["libero_object:0"]},                    # only these of the grid's tasks
        {"name": "DPO", "overrides": {"algo.objective": "dpo"}}
      ],
      "adopt": [{"method": "TGRPO", "task": "libero_object:0", "seed": 0, "path": "runs/tgrpo_t0"}]
    }

Stages, in order: the SFT model evaluated on every task (the "SFT" row and the baseline
of the paired tests) -> every training run, method by method (each over its seeds and tasks), from the
SFT model of its seed, evaluated at its end on ``eval.init_states``. One SFT model per (suite, seed), trained
on the suite's tasks of the grid unless ``sft.checkpoints`` names one, is trained just before the first cell
that needs it, and a task's demos are collected (if missing) when a cell or an SFT model first needs them,
so a grid's first results come after one task's demos and one SFT model, not after all of them. ``sweep`` expands
one method into several, the lists zipped; ``{key}`` in the name is replaced by the value. ``tasks`` in a
method runs it on those of the grid's tasks only (an ablation on one task of a four-suite grid).

``adopt`` takes finished runs made outside the grid as its cells instead of running them again: a training
run whose ``train_config.json`` equals the cell's settings in everything but :data:`EXECUTION_FIELDS`, or
(for the "SFT" row) an evaluation directory that records the cell's SFT checkpoint and holds its episodes.
Anything else is refused with the differing settings named; execution differences are listed in the report.

Layout: ``out/demos`` (unless ``demos.root``), ``out/sft/<suite>/seed<S>``,
``out/runs/<method>/<suite>/task<K>/seed<S>`` (a training run directory, or ``eval/`` for SFT), and the
aggregate ``out/results.json``, ``out/results.md`` and ``out/*.png``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from tgrpo.config import apply_overrides, parse_index_list, train_config_from_dict
from tgrpo.data.hdf5 import default_demo_path, find_task_demo_file
from tgrpo.envs.suites import NUM_INIT_STATES, SUITES, get_suite
from tgrpo.errors import ConfigError, StopRequested, TgrpoError, choice_error
from tgrpo.evaluation import EPISODES_FILE, EvalConfig, mcnemar_exact_p, read_episodes

SFT = "SFT"
_KEYS = ("out", "tasks", "seeds", "demos", "sft", "train", "eval", "methods", "adopt", "ledger")
CELL_FILE = "cell.json"  # a ledger cell's record, written last: a cell directory without it is not recorded
CLOCK_FILE = "run.json"  # in a cell's run directory: its wall time and invocations (cell_clock)
# TrainConfig settings that change how a run executes, not what it learns (overlap changes only the order of
# the random draws and the batch composition of the policy calls, see RolloutConfig; merged LoRA sampling
# changes float rounding, see PolicyConfig): an adopted run may
# differ from its cell in these, and the report lists each difference.
EXECUTION_FIELDS = ("out", "num_threads", "save_every", "probe_demos", "rollout.overlap", "rollout.backend",
                    "rollout.ray_address", "rollout.max_retries", "rollout.worker_timeout_s", "reward.cache_dir",
                    "policy.merge_lora_sampling")


@dataclass(frozen=True)
class Method:
    """One training method of the grid: a name and its TrainConfig overrides (dotted keys)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None  # the swept key, for sweep plots
    sweep_group: str | None = None  # the declared name template the method was expanded from
    tasks: tuple[tuple[str, int], ...] | None = None  # the grid's tasks it runs on (None: all of them)

    @property
    def slug(self) -> str:
        return slug(self.name)


@dataclass(frozen=True)
class Run:
    """One cell of the grid: a method (or the SFT start) on one task with one seed."""

    method: str
    suite: str
    task: int
    seed: int
    path: str  # the run directory

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.method, self.suite, self.task, self.seed)


@dataclass(frozen=True)
class Adoption:
    """A finished run made outside the grid, taken as the cell ``(method, suite, task, seed)``.

    ``path``: a training run directory, or for the "SFT" row an evaluation directory. ``notes``: how its
    execution settings differ from the grid's (see :data:`EXECUTION_FIELDS`)."""

    method: str
    suite: str
    task: int
    seed: int
    path: str
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.method, self.suite, self.task, self.seed)


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b": value}, values normalized through JSON (tuples become lists)."""
    out: dict[str, Any] = {}
    for k, v in json.loads(json.dumps(data, default=str)).items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def slug(name: str) -> str:
    """A directory name for a method name ("a1=0.3" stays, "GRPO (w/o step)" -> "GRPO_w_o_step")."""
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", name).strip("_") or "method"


def _method_tasks(m: dict, where: str, grid: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...] | None:
    """A method's ``tasks``: a non-empty subset of the grid's, in the grid's order (None when absent)."""
    return grid_subset(m["tasks"], where, grid) if "tasks" in m else None


def grid_subset(items: Any, where: str, grid: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """``"suite:task"`` items (index or name) -> a non-empty subset of the grid's tasks, in the grid's order;
    an item that is not one of them is refused with the grid's tasks named."""
    from tgrpo.envs.libero_env import resolve_task

    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{where}: tasks must be a non-empty list of the grid's tasks, got {items!r}")
    chosen = set()
    for item in items:
        suite, task = _parse_task(item)
        key = (suite, resolve_task(suite, task))
        if key not in grid:
            raise choice_error(f"{where} task", f"{suite}:{task}", [f"{s}:{t}" for s, t in grid])
        chosen.add(key)
    return tuple(t for t in grid if t in chosen)


def _expand_methods(raw: list, grid: tuple[tuple[str, int], ...]) -> tuple[Method, ...]:
    methods: list[Method] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or "name" not in m:
            raise ConfigError(f"methods[{i}] must be an object with a \"name\", got {m!r}")
        unknown = set(m) - {"name", "overrides", "sweep", "tasks"}
        if unknown:
            raise ConfigError(f"methods[{i}] ({m['name']}): unknown key(s) {sorted(unknown)}; "
                              "valid: name, overrides, sweep, tasks")
        base = dict(m.get("overrides", {}))
        tasks = _method_tasks(m, f"methods[{i}] ({m['name']})", grid)
        sweep = m.get("sweep")
        if not sweep:
            methods.append(Method(m["name"], base, tasks=tasks))
            continue
        lengths = {k: len(v) for k, v in sweep.items() if isinstance(v, list)}
        if len(lengths) != len(sweep) or len(set(lengths.values())) != 1 or not next(iter(lengths.values())):
            raise ConfigError(f"methods[{i}] ({m['name']}): sweep must map keys to non-empty lists of equal length "
                              f"(zipped), got {sweep}")
        first = next(iter(sweep))
        for values in zip(*sweep.values()):
            point = dict(zip(sweep, values))
            name = m["name"]
            for k, v in point.items():
                name = name.replace("{" + k + "}", str(v))
            if name == m["name"]:
                name = f"{m['name']} {first}={point[first]}"
            methods.append(Method(name, base | point, sweep=first, sweep_group=m["name"], tasks=tasks))
    names = [m.name for m in methods]
    if SFT in names or len(set(map(slug, names))) != len(names):
        raise ConfigError(f"method names must be distinct and not {SFT!r} (the SFT start is always evaluated): {names}")
    return tuple(methods)


def _parse_task(item: Any) -> tuple[str, str]:
    if isinstance(item, str) and ":" in item:
        suite, task = item.split(":", 1)
    elif isinstance(item, dict) and {"suite", "task"} <= set(item):
        suite, task = item["suite"], str(item["task"])
    else:
        raise ConfigError(f"tasks entry {item!r} must be \"suite:task\" (e.g. \"libero_object:0\") or "
                          "{\"suite\": ..., \"task\": ...}")
    get_suite(suite)
    return suite, task


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid of methods x tasks x seeds (see the module docstring for the JSON layout).

    Attributes:
        out: experiment directory.
        tasks: (suite, task index) pairs.
        seeds: seeds; seed S trains SFT with seed S (or uses ``sft_checkpoints[suite][S]``) and every TGRPO run
            of seed S starts from it, so the spread over seeds includes the SFT model's.
        methods: training methods (the SFT start is always evaluated as the row "SFT").
        demo_root: LIBERO-format demos, ``<root>/<suite>/<task>_demo.hdf5``; missing ones are collected.
        num_demos: expert demos collected per missing task.
        demo_envs: environment workers for demo collection.
        sft: SFTConfig fields for the SFT models (steps, batch_size, lr, ...).
        sft_checkpoints: suite -> seed -> existing SFT checkpoint (skips SFT training for it).
        train: TrainConfig fields shared by every run (nested, e.g. {"iterations": 16, "algo": {"lr": 1e-4}}).
        eval_init_states: fixed init states every policy is evaluated on (default all 50: the LIBERO protocol).
        eval_envs: environment workers of the SFT evaluations (training runs evaluate with their group's).
        adopted: finished runs made outside the grid, taken as its cells (checked on load, see the module).
        ledger: a directory, meant to be committed, that keeps every finished cell's outcome (see
            :func:`record_cell`); a cell recorded there is done even when ``out`` is gone. None: no ledger.
    """

    out: str
    tasks: tuple[tuple[str, int], ...]
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    demo_root: str
    num_demos: int = 50
    demo_envs: int = 2
    sft: dict[str, Any] = field(default_factory=dict)
    sft_checkpoints: dict[str, dict[int, str]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval_init_states: tuple[int, ...] = tuple(range(NUM_INIT_STATES))
    eval_envs: int = 2
    adopted: tuple[Adoption, ...] = ()
    ledger: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        from tgrpo.envs.libero_env import resolve_task

        unknown = set(data) - set(_KEYS)
        if unknown:
            raise ConfigError(f"unknown experiment key(s) {sorted(unknown)}; valid: {', '.join(_KEYS)}")
        for key in ("out", "tasks", "methods"):
            if not data.get(key):
                raise ConfigError(f"the experiment needs a non-empty {key!r}")
        tasks = tuple((s, resolve_task(s, t)) for s, t in map(_parse_task, data["tasks"]))
        seeds = tuple(int(s) for s in data.get("seeds", [0]))
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be a non-empty list of distinct integers, got {data.get('seeds')}")
        demos, sft, ev = data.get("demos", {}), dict(data.get("sft", {})), data.get("eval", {})
        ckpts = {s: {int(k): v for k, v in per.items()} for s, per in sft.pop("checkpoints", {}).items()}
        from tgrpo.sft import SFTConfig

        allowed = {f.name for f in dataclasses.fields(SFTConfig)} - {"data", "out", "seed", "policy"}
        if set(sft) - allowed:
            raise ConfigError(f"unknown sft key(s) {sorted(set(sft) - allowed)}; valid: checkpoints, "
                              + ", ".join(sorted(allowed)))
        for s in ckpts:
            get_suite(s)
        init = ev.get("init_states", "0-49")
        init = parse_index_list(init, "eval.init_states") if isinstance(init, str) else tuple(init)
        if not init or any(not 0 <= i < NUM_INIT_STATES for i in init):
            raise ConfigError(f"eval.init_states must be indices in 0..{NUM_INIT_STATES - 1}, got {init}")
        cfg = cls(out=data["out"], tasks=tasks, seeds=seeds, methods=_expand_methods(data["methods"], tasks),
                  demo_root=demos.get("root", str(Path(data["out"]) / "demos")),
                  num_demos=int(demos.get("num_demos", 50)), demo_envs=int(demos.get("num_envs", 2)),
                  sft=sft, sft_checkpoints=ckpts, train=dict(data.get("train", {})), eval_init_states=init,
                  eval_envs=int(ev.get("num_envs", 2)), ledger=data.get("ledger"))
        for m in cfg.methods:  # every run's TrainConfig is built and validated now, before hours of compute
            for (suite, task), seed in itertools.product(cfg.method_tasks(m.name), cfg.seeds):
                cfg.train_config(m, suite, task, seed)
        adopt = data.get("adopt", [])
        if not isinstance(adopt, list):
            raise ConfigError(f"adopt must be a list of {{method, task, seed, path}} objects, got {adopt!r}")
        adopted = tuple(cfg._adoption(entry, f"adopt[{i}]") for i, entry in enumerate(adopt))
        keys = [a.key for a in adopted]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ConfigError("adopt names a cell more than once: " +
                              ", ".join(f"{m}, {s} task {t}, seed {sd}" for m, s, t, sd in twice))
        return dataclasses.replace(cfg, adopted=adopted)

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read experiment config {path}: {exc}") from None
        return cls.from_dict(data)

    # -- the grid ----------------------------------------------------------------------------------------
    def sft_dir(self, suite: str, seed: int) -> Path:
        return Path(self.out) / "sft" / suite / f"seed{seed}"

    def sft_checkpoint(self, suite: str, seed: int) -> Path:
        given = self.sft_checkpoints.get(suite, {}).get(seed)
        if given:
            return Path(given)
        d = self.sft_dir(suite, seed)
        return d / "best" if (d / "best").exists() or not (d / "checkpoint").exists() else d / "checkpoint"

    def sft_config(self, suite: str, seed: int, out: str | Path | None = None):
        """The SFTConfig of the suite's SFT model for ``seed``: on the demos of the grid's tasks of that suite,
        written to ``out`` (default: its place in the grid, :meth:`sft_dir`)."""
        from tgrpo.policy.config import PolicyConfig
        from tgrpo.sft import SFTConfig

        files = tuple(str(self.demo_path(s, t)) for s, t in self.tasks if s == suite)
        return SFTConfig(data=files, out=str(out or self.sft_dir(suite, seed)), seed=seed,
                         policy=PolicyConfig(seed=seed), **self.sft)

    def demo_path(self, suite: str, task: int) -> Path:
        from tgrpo.envs.libero_env import task_names

        return default_demo_path(self.demo_root, suite, task_names(suite)[task])

    def method(self, name: str) -> Method:
        return next(m for m in self.methods if m.name == name)

    def method_tasks(self, name: str) -> tuple[tuple[str, int], ...]:
        """The (suite, task) pairs the method ``name`` runs on: its own ``tasks``, else all of the grid's (the
        SFT start is evaluated on all of them)."""
        return self.tasks if name == SFT else (self.method(name).tasks or self.tasks)

    def adoption(self, key: tuple[str, str, int, int]) -> Adoption | None:
        return next((a for a in self.adopted if a.key == key), None)

    def run_dir(self, method: str, suite: str, task: int, seed: int) -> Path:
        adopted = self.adoption((method, suite, task, seed))
        if adopted:
            return Path(adopted.path)
        return Path(self.out) / "runs" / slug(method) / suite / f"task{task}" / f"seed{seed}"

    def sft_eval_config(self, run: Run) -> EvalConfig:
        """The evaluation of the SFT cell ``run``: its SFT checkpoint, greedy, with the training runs'
        ``max_steps`` (as their own evaluations), on the grid's init states."""
        return EvalConfig(suite=run.suite, tasks=(run.task,), init_states=self.eval_init_states,
                          num_envs=self.eval_envs, max_steps=self.train.get("rollout", {}).get("max_steps"),
                          out=str(self.eval_dir(run)), checkpoint=str(self.sft_checkpoint(run.suite, run.seed)))

    def train_config(self, method: Method, suite: str, task: int, seed: int):
        data = json.loads(json.dumps(self.train))
        data.setdefault("eval_every", 0)
        data.update({"suite": suite, "task": task, "seed": seed, "eval_init_states": list(self.eval_init_states),
                     "demos": str(self.demo_path(suite, task)),
                     "out": str(self.run_dir(method.name, suite, task, seed))})
        data.setdefault("policy", {})["checkpoint"] = str(self.sft_checkpoint(suite, seed))
        try:
            return train_config_from_dict(apply_overrides(data, method.overrides))
        except ConfigError as exc:
            raise ConfigError(f"method {method.name!r}: {exc}") from None

    def runs(self, tasks: tuple[tuple[str, int], ...] | None = None) -> list[Run]:
        """Every cell (of ``tasks`` only, when given): the SFT evaluations first, then method by method, each
        over seeds and tasks (so a partly finished grid has whole methods, with their spread over seeds, rather
        than whole seeds)."""
        runs = [Run(SFT, s, t, seed, str(self.run_dir(SFT, s, t, seed))) for seed in self.seeds for s, t in self.tasks]
        runs += [Run(m.name, s, t, seed, str(self.run_dir(m.name, s, t, seed)))
                 for m in self.methods for seed in self.seeds for s, t in self.method_tasks(m.name)]
        return [r for r in runs if tasks is None or (r.suite, r.task) in tasks]

    def eval_dir(self, run: Run) -> Path:
        if run.method == SFT:  # an adopted SFT cell is the evaluation directory itself
            return Path(run.path) / ("" if self.adoption(run.key) else "eval")
        iterations = self.train_config(self.method(run.method), run.suite, run.task, run.seed).iterations
        return Path(run.path) / "eval" / f"iter_{iterations:04d}"  # the final evaluation of the run

    def evaluated(self, run: Run) -> bool:
        """Whether the cell's final evaluation is complete in its run directory."""
        path = self.eval_dir(run)
        return (path / "results.json").exists() and (path / EPISODES_FILE).exists()

    def done(self, run: Run) -> bool:
        """Recorded in the ledger, or evaluated in its run directory."""
        return self.recorded(run) is not None or self.evaluated(run)

    # -- the ledger -------------------------------------------------------------------------------------
    def record_dir(self, run: Run) -> Path | None:
        """The ledger's directory of the cell ``run``: ``ledger/<method>/<suite>/task<K>/seed<S>`` (None
        without a ledger)."""
        if not self.ledger:
            return None
        return Path(self.ledger) / slug(run.method) / run.suite / f"task{run.task}" / f"seed{run.seed}"

    def recorded(self, run: Run) -> dict | None:
        """The ledger's record of the cell ``run`` (its ``cell.json``), or None."""
        d = self.record_dir(run)
        if d is None or not (d / CELL_FILE).exists():
            return None
        try:
            return json.loads((d / CELL_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise TgrpoError(f"{d / CELL_FILE} is not JSON ({exc}); restore it from version control, or delete "
                             "the directory to run the cell again") from None

    def start(self, suite: str, task: int, seed: int) -> dict[str, str | None]:
        """Fingerprints of what a cell starts from: its SFT model (``sft``) and its task's demos (``demos``,
        the keyposes of the reward); None for one that is not there."""
        from tgrpo.checkpoint import fingerprint
        from tgrpo.data.hdf5 import DemoFile

        ckpt, demos = self.sft_checkpoint(suite, seed), self.demo_path(suite, task)
        sft = fingerprint(ckpt) if ckpt.is_dir() else None
        if not demos.exists():
            return {"sft": sft, "demos": None}
        with DemoFile(demos) as f:
            return {"sft": sft, "demos": f.fingerprint()}

    def check_start(self, run: Run, start: dict[str, str | None]) -> None:
        """Refuse to run ``run`` from another SFT model or other demos than the ledger's cells of the same
        suite and seed (same task, for the demos) started from: its outcome would not pair with theirs."""
        mismatch: dict[str, tuple[str, list[str]]] = {}
        for other in self.runs():
            rec = self.recorded(other) if other.suite == run.suite else None
            for what, same in (("sft", other.seed == run.seed), ("demos", other.task == run.task)):
                had, now = (rec or {}).get("start", {}).get(what), start.get(what)
                if same and had and now and had != now:
                    mismatch.setdefault(what, (had, []))[1].append(f"{other.method} task {other.task} seed {other.seed}")
        if mismatch:
            names = {"sft": f"the SFT model {self.sft_checkpoint(run.suite, run.seed)}",
                     "demos": f"the demos {self.demo_path(run.suite, run.task)}"}
            raise TgrpoError(
                "; ".join(
                    f"{names[what]} (fingerprint {start[what][:12]}) is not what the ledger's cells {', '.join(cells)} "
                    f"started from ({had[:12]})" for what, (had, cells) in mismatch.items()) +
                f". It was made again from other code or data, so this cell would not pair with those. Their records "
                f"stay in {self.ledger}; to run them again from the new start, move them out of it.")

    # -- adopting finished runs -------------------------------------------------------------------------
    def _adoption(self, entry: Any, where: str) -> Adoption:
        """Check one ``adopt`` entry against its cell; any difference that changes the result is an error."""
        from tgrpo.envs.libero_env import resolve_task

        if not isinstance(entry, dict) or set(entry) != {"method", "task", "seed", "path"}:
            raise ConfigError(f"{where} must be an object with exactly method, task, seed and path, got {entry!r}")
        suite, task = _parse_task(entry["task"])
        task, seed, path, method = resolve_task(suite, task), entry["seed"], Path(entry["path"]), entry["method"]
        names = [SFT] + [m.name for m in self.methods]
        if method not in names:
            raise choice_error(f"{where} method", method, names)
        tasks = self.method_tasks(method)
        if (suite, task) not in tasks:
            raise choice_error(f"{where} task", f"{suite}:{task}", [f"{s}:{t}" for s, t in tasks])
        if seed not in self.seeds:
            raise choice_error(f"{where} seed", seed, self.seeds)
        cell = f"{method}, {suite} task {task}, seed {seed}"
        check = self._check_adopted_eval if method == SFT else self._check_adopted_run
        notes = check(method, suite, task, seed, path, f"{where} ({path}, as {cell})")
        if method != SFT and not self.evaluated(Run(method, suite, task, seed, str(path))):
            raise ConfigError(f"{where}: no final evaluation; finish the run (`tgrpo train --resume`) or leave it "
                              "out and let the grid run the cell")
        return Adoption(method, suite, task, seed, str(path), tuple(notes))

    def _check_adopted_run(self, method: str, suite: str, task: int, seed: int, path: Path, where: str) -> list[str]:
        from tgrpo.envs.libero_env import resolve_task, task_language, task_names

        file = path / "train_config.json"
        if not file.exists():
            raise ConfigError(f"{where}: not a training run directory (no train_config.json)")
        raw = json.loads(file.read_text())
        try:
            have = _flat(asdict(train_config_from_dict(raw)))
        except ConfigError as exc:
            raise ConfigError(f"{where}: its train_config.json is not valid: {exc}") from None
        want = _flat(asdict(self.train_config(self.method(method), suite, task, seed)))
        info = SimpleNamespace(suite=suite, task_id=task, name=task_names(suite)[task],
                               language=task_language(suite, task))
        for d in (have, want):  # the same task and files, however they were named
            d["task"] = resolve_task(suite, d["task"])
            try:
                d["demos"] = str(find_task_demo_file(d["demos"], info).resolve()) if d["demos"] else None
            except TgrpoError:
                pass  # compared as given
            d["policy.checkpoint"] = str(Path(d["policy.checkpoint"]).resolve()) if d["policy.checkpoint"] else None
        wrong = [k for k in want if k not in EXECUTION_FIELDS and have.get(k) != want[k]]
        if wrong:
            raise ConfigError(f"{where}: trained with other settings than the cell: " +
                              "; ".join(f"{k} = {have.get(k)!r} (the cell: {want[k]!r})" for k in wrong))
        given = _flat(raw)
        return [f"{k} = {given[k]!r} (the grid: {want[k]!r})" if k in given else
                f"{k} absent (the run predates it; the grid: {want[k]!r})"
                for k in EXECUTION_FIELDS if k != "out" and given.get(k, object()) != want[k]]

    def _check_adopted_eval(self, method: str, suite: str, task: int, seed: int, path: Path, where: str) -> list[str]:
        file = path / "results.json"
        if not file.exists() or not (path / EPISODES_FILE).exists():
            raise ConfigError(f"{where}: not a finished evaluation directory (no results.json and {EPISODES_FILE})")
        ev = json.loads(file.read_text()).get("config", {})
        cell = self.sft_eval_config(Run(method, suite, task, seed, str(path)))
        if not ev.get("checkpoint"):
            raise ConfigError(f"{where}: the evaluation does not record which checkpoint it evaluated (made before "
                              f"tgrpo recorded it); leave it out and the grid evaluates {cell.checkpoint}")
        problems = []
        if Path(ev["checkpoint"]).resolve() != Path(cell.checkpoint).resolve():
            problems.append(f"checkpoint {ev['checkpoint']} (the cell: {cell.checkpoint})")
        for key in ("suite", "max_steps", "temperature"):
            if ev.get(key) != getattr(cell, key):
                problems.append(f"{key} {ev.get(key)!r} (the cell: {getattr(cell, key)!r})")
        done = read_episodes(path)
        missing = [i for i in self.eval_init_states if (task, i) not in done]
        if missing:
            problems.append(f"no episodes of task {task} from init states {_ranges(tuple(missing))}")
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))
        return []


# -- running --------------------------------------------------------------------------------------------
def _stage(text: str) -> None:
    print(f"\n=== {text} ===", file=sys.stderr, flush=True)


def run_experiment(cfg: ExperimentConfig, tasks: tuple[tuple[str, int], ...] | None = None) -> dict:
    """Run every unfinished cell of the grid in order, then aggregate. Rerunning continues where it stopped.

    ``tasks``: run only the cells of these of the grid's tasks (the aggregate still covers the whole grid).
    With a ledger, each cell is first checked against the recorded cells that share its SFT model or demos
    (:meth:`ExperimentConfig.check_start`), and recorded when it finishes (:func:`record_cell`).

    A cell that fails (its demonstrations, its SFT model, its training or evaluation raised) is reported and
    the grid goes on with the others; cells that need a prerequisite which already failed in this
    invocation (a task's demos, a suite's SFT model) are skipped without trying it again. After the last
    cell the results are aggregated and a :class:`TgrpoError` lists what did not finish; rerunning the
    command retries exactly those. SIGINT/SIGTERM (:class:`StopRequested`) still stop the whole grid.
    """
    from tgrpo.data.collect import collect_task
    from tgrpo.evaluation import evaluate
    from tgrpo.policy.registry import load_policy
    from tgrpo.sft import train_sft
    from tgrpo.train import train

    code_commit()  # the code this process loaded: read now, before a commit made while the grid runs moves HEAD
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    failed: dict[str, str] = {}  # a prerequisite several cells share (demos, SFT model) -> its error's first line
    unfinished: dict[str, str] = {}  # a cell that did not finish -> its error's first line

    def need(what: str, make) -> None:
        """Make a shared prerequisite once; a failure is remembered, so the cells needing it skip it."""
        if what in failed:
            raise TgrpoError(f"skipped: {what} failed earlier in this run ({failed[what]})")
        try:
            make()
        except StopRequested:
            raise
        except TgrpoError as exc:
            failed[what] = str(exc).splitlines()[0]
            raise

    def demos(tasks: list[tuple[str, int]]) -> tuple[str, ...]:
        for suite, task in tasks:
            def collect(suite=suite, task=task):
                r = collect_task(suite, task, cfg.demo_root, cfg.num_demos, num_envs=cfg.demo_envs)
                if not r.skipped:
                    print(f"demos: {suite} task {task}: {r.demos} from {r.attempts} attempts -> {r.path}",
                          file=sys.stderr)
            need(f"the demonstrations of {suite} task {task}", collect)
        return tuple(str(cfg.demo_path(s, t)) for s, t in tasks)

    def sft_model(suite: str, seed: int) -> None:
        _stage(f"SFT {suite} seed {seed}")
        demos([(s, t) for s, t in cfg.tasks if s == suite])
        train_sft(cfg.sft_config(suite, seed))

    runs = cfg.runs(tasks)
    for i, run in enumerate(runs):
        if cfg.done(run):
            continue
        cell = f"run {i + 1}/{len(runs)}: {run.method}, {run.suite} task {run.task}, seed {run.seed}"
        try:
            demos([(run.suite, run.task)])  # its keyposes (and, for SFT, its suite's below), collected when needed
            d = cfg.sft_dir(run.suite, run.seed)  # the SFT model this cell starts from (or evaluates)
            if not cfg.sft_checkpoints.get(run.suite, {}).get(run.seed) and not (d / "sft_summary.json").exists():
                need(f"the SFT model of {run.suite} seed {run.seed}", lambda: sft_model(run.suite, run.seed))
            if cfg.ledger:
                cfg.check_start(run, cfg.start(run.suite, run.task, run.seed))
            _stage(cell)
            with cell_clock(Path(run.path) / CLOCK_FILE, asdict(run)):
                if run.method == SFT:
                    ecfg = cfg.sft_eval_config(run)
                    evaluate(load_policy(ecfg.checkpoint), ecfg)
                else:
                    train(cfg.train_config(cfg.method(run.method), run.suite, run.task, run.seed))
            if cfg.ledger:
                record_cell(cfg, run)
        except StopRequested:
            raise
        except TgrpoError as exc:
            unfinished[cell] = str(exc).splitlines()[0]
            print(f"error: {cell} did not finish: {exc}\nThe grid goes on with the other runs; rerunning the "
                  "command retries this one.", file=sys.stderr)
            continue
        report(cfg)  # refreshed after every run, so partial grids can be read
    summary = report(cfg)
    if unfinished:
        raise TgrpoError(f"{len(unfinished)} of the {len(runs)} runs did not finish (the results of the others "
                         f"are in {out / 'results.md'}; rerun the command to retry them):\n"
                         + "\n".join(f"  {cell}: {why}" for cell, why in unfinished.items()))
    return summary


@contextlib.contextmanager
def cell_clock(record: Path, fields: dict, every_s: float = 30.0):
    """Count a cell's wall time in ``record`` (JSON: ``fields`` plus ``seconds`` and ``invocations``), summed
    over invocations.

    A session's end can kill the grid in the middle of a cell, and the next invocation resumes the cell from
    its checkpoint. The running total is therefore saved every ``every_s`` seconds by a daemon thread, and once
    more on leaving the block (normally or by an exception): a killed invocation's time counts up to its last
    save (at most ``every_s`` short) instead of being lost. Each save replaces the file whole, so a kill never
    leaves half a record. ``invocations`` lists every invocation that worked on the cell, in order, with the
    code it ran (:func:`code_commit`) and its seconds; time saved by a version that kept no such list appears
    as one entry with commit None."""
    old = json.loads(record.read_text()) if record.exists() else {}
    base = old.get("seconds", 0.0)
    before = old.get("invocations", [{"commit": None, "seconds": base}] if base else [])
    t0, stop, commit = time.perf_counter(), threading.Event(), code_commit()

    def save() -> None:
        spent = time.perf_counter() - t0
        now = {"seconds": base + spent, "invocations": before + [{"commit": commit, "seconds": spent}]}
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(fields | now, indent=2))
        os.replace(tmp, record)

    def beat() -> None:
        while not stop.wait(every_s):
            save()

    record.parent.mkdir(parents=True, exist_ok=True)
    thread = threading.Thread(target=beat, name="cell-clock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        save()


def read_clock(run: Run) -> dict:
    """What :func:`cell_clock` saved for the cell ``run`` (``seconds``, ``invocations``); empty before its first
    invocation."""
    path = Path(run.path) / CLOCK_FILE
    return json.loads(path.read_text()) if path.exists() else {}


# -- aggregation ----------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value)."""
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if len(values) > 1 else "")


def paper_table(rows: dict[str, dict[str, list[float]]]) -> str:
    """Markdown table laid out like the paper's (Spatial / Object / Goal / Long / Average).

    ``rows``: label -> suite -> per-seed success rates in [0, 1]. A cell shows the mean over seeds in %,
    with the sample std over seeds when there are several; a suite without results shows "-". Average: the
    mean over the suites, seed by seed, for a row with results on every suite any row has (an average over
    fewer suites would not compare with the others; "-" otherwise)."""
    suites = {s for per_suite in rows.values() for s, v in per_suite.items() if v}
    lines = ["| method | " + " | ".join(s.paper_name for s in SUITES.values()) + " | Average |",
             "|---|" + "---|" * (len(SUITES) + 1)]
    for label, per_suite in rows.items():
        cells = [_fmt(per_suite.get(s, [])) for s in SUITES]
        present = [per_suite[s] for s in SUITES if per_suite.get(s)]
        n = min((len(v) for v in present), default=0) if len(present) == len(suites) else 0
        avg = [float(np.mean([v[i] for v in present])) for i in range(n)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(avg)} |")
    return "\n".join(lines) + "\n"


def cell_result(cfg: ExperimentConfig, run: Run) -> dict:
    """The evaluated cell ``run`` from its run directory: its outcome per init state, success count, wall time
    and, for a training run, its trainer history (``history``) with the group return curve and the fraction of
    groups with a success."""
    wanted = set(cfg.eval_init_states)  # an adopted evaluation may hold more tasks or states
    episodes = {(t, i): ok for (t, i), ok in read_episodes(cfg.eval_dir(run)).items()
                if t == run.task and i in wanted}
    rec = asdict(run) | {"successes": sum(episodes.values()), "episodes": len(episodes),
                         "outcomes": {f"{t}:{i}": s for (t, i), s in sorted(episodes.items())}}
    rec["seconds"] = read_clock(run).get("seconds")
    state = Path(run.path) / "checkpoint" / "trainer_state.json"
    if state.exists():
        hist = json.loads(state.read_text())["history"]
        rec["return_curve"] = [h["reward/return_mean"] for h in hist]
        rec["group_success"] = float(np.mean([h["rollout/success_rate"] > 0 for h in hist]))
        rec["history"] = hist
    return rec


def record_cell(cfg: ExperimentConfig, run: Run) -> dict:
    """Keep the evaluated cell ``run`` in the ledger and return its record.

    The ledger directory (:meth:`ExperimentConfig.record_dir`) gets the evaluation's ``episodes.jsonl`` and
    ``results.json`` as they are, and ``cell.json``: :func:`cell_result`, the fingerprints of the SFT model and
    demos the cell started from (:meth:`ExperimentConfig.start`), the SFT model's ``sft_summary.json`` for an
    SFT cell, and the code version. ``cell.json`` is written last, whole, so an interrupted record is not
    taken for one. Run directories hold gigabytes and are not versioned; the ledger holds some kilobytes per
    cell, so committing it keeps a long grid's results when its run directories are lost, and the numbers
    in the docs traceable to every episode."""
    import shutil

    import tgrpo

    dest = cfg.record_dir(run)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (EPISODES_FILE, "results.json"):
        shutil.copyfile(cfg.eval_dir(run) / name, dest / name)
    code = {"tgrpo": tgrpo.__version__, "commit": code_commit(), "invocations": read_clock(run).get("invocations")}
    rec = cell_result(cfg, run) | {"start": cfg.start(run.suite, run.task, run.seed), "code": code}
    summary = cfg.sft_dir(run.suite, run.seed) / "sft_summary.json"
    if run.method == SFT and summary.exists():
        rec["sft_summary"] = json.loads(summary.read_text())
    tmp = dest / (CELL_FILE + ".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, dest / CELL_FILE)
    return rec


@functools.cache
def code_commit() -> str | None:
    """The commit the package was loaded from, with ``+dirty`` when its own files had uncommitted changes; None
    outside a checkout. Read once per process (:func:`run_experiment` reads it before any cell), so a commit
    made while a grid runs is not taken for the code that grid runs."""
    import subprocess

    here = Path(__file__).parent
    try:
        git = functools.partial(subprocess.run, cwd=here, capture_output=True, text=True, timeout=10, check=False)
        head = git(["git", "rev-parse", "HEAD"])
        dirty = git(["git", "status", "--porcelain", "--untracked-files=no", "--", "."])  # the package's files
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def time_left(cfg: ExperimentConfig, runs: list[Run]) -> tuple[float, float | None, float | None]:
    """Estimated seconds for the unfinished cells of ``runs``, from the finished cells' wall times (the ledger's
    records, else their ``run.json``): each SFT evaluation at the mean of those finished, each training run at
    the mean of the training runs finished. Returns ``(seconds, sft_mean, train_mean)``; a kind with no
    finished cell has mean None and adds nothing. Demos and SFT models still to make are not included."""
    spent: dict[bool, list[float]] = {True: [], False: []}
    for run in cfg.runs():
        rec = cfg.recorded(run)
        if rec is None and cfg.evaluated(run):
            rec = read_clock(run)
        if rec and rec.get("seconds"):
            spent[run.method == SFT].append(rec["seconds"])
    mean = {kind: float(np.mean(v)) if v else None for kind, v in spent.items()}
    left = sum(mean[run.method == SFT] or 0.0 for run in runs if not cfg.done(run))
    return left, mean[True], mean[False]


def collect_results(cfg: ExperimentConfig) -> list[dict]:
    """One record per finished cell: its episodes, success count, wall time and training history (without the
    full ``history``). With a ledger, every cell is read from it, and an evaluated cell not yet there (one
    adopted, or finished before the ledger was declared) is recorded first."""
    records = []
    for run in cfg.runs():
        rec = cfg.recorded(run)
        if rec is None:
            if not cfg.evaluated(run):
                continue
            rec = record_cell(cfg, run) if cfg.ledger else cell_result(cfg, run)
        records.append({k: v for k, v in rec.items() if k not in ("history", "start", "code", "sft_summary")})
    return records


def _paired(r: dict, base: dict) -> dict:
    """Outcome pairs of a cell ``r`` and its SFT start ``base`` on the init states both evaluated: counts of
    both successful, only the SFT start, only the cell, and the exact McNemar p-value of the discordant pairs."""
    keys = [k for k in r["outcomes"] if k in base["outcomes"]]
    c = {"pairs": len(keys),
         "both": sum(bool(r["outcomes"][k] and base["outcomes"][k]) for k in keys),
         "only_sft": sum(bool(base["outcomes"][k] and not r["outcomes"][k]) for k in keys),
         "only_method": sum(bool(r["outcomes"][k] and not base["outcomes"][k]) for k in keys)}
    return c | {"p_value": mcnemar_exact_p(c["only_sft"], c["only_method"])}


def report(cfg: ExperimentConfig) -> dict:
    """Aggregate the finished cells into ``results.json``, ``results.md`` and plots; returns the summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records = collect_results(cfg)
    by_key = {(r["method"], r["suite"], r["task"], r["seed"]): r for r in records}
    methods = [SFT] + [m.name for m in cfg.methods]
    total = len(cfg.runs())

    # suite level, seed by seed (mean over the suite's tasks; only seeds with all of them done)
    suite_rows: dict[str, dict[str, list[float]]] = {}
    for m in methods:
        covered = cfg.method_tasks(m)
        for suite in dict.fromkeys(s for s, _ in covered):
            suite_rows.setdefault(m, {})[suite] = _seed_rates(cfg, records, m, [(s, t) for s, t in covered if s == suite])

    # paired against SFT of the same seed on the same states: per cell, and pooled over tasks and seeds
    cell_pairs = {k: _paired(r, by_key[(SFT, *k[1:])]) for k, r in by_key.items()
                  if k[0] != SFT and (SFT, *k[1:]) in by_key}
    paired = {}
    for m in methods[1:]:
        counts = [c for k, c in cell_pairs.items() if k[0] == m]
        pooled = {f: sum(c[f] for c in counts) for f in ("pairs", "both", "only_sft", "only_method")}
        paired[m] = pooled | {"p_value": mcnemar_exact_p(pooled["only_sft"], pooled["only_method"])}

    lines = [f"# Experiment {out}", "",
             f"{len(records)}/{total} runs finished. Seeds {list(cfg.seeds)}; evaluation: greedy, LIBERO protocol, "
             f"fixed init states {_ranges(cfg.eval_init_states)} of each task. Success in %, mean ± sample std over "
             "seeds.", "", "## By suite (laid out like the paper's table)", "", paper_table(suite_rows),
             "## By task", ""]
    head = [f"{s} {t}" for s, t in cfg.tasks]
    lines += ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for m in methods:
        cells = []
        for s, t in cfg.tasks:
            done = [by_key[(m, s, t, seed)] for seed in cfg.seeds if (m, s, t, seed) in by_key]
            cells.append(_fmt([r["successes"] / r["episodes"] for r in done]) +
                         (" (" + ", ".join(f"{r['successes']}/{r['episodes']}" for r in done) + ")" if done else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    sweeps = sweep_points(cfg, records)
    for group, sw in sweeps.items():
        lines += ["", f"## Sweep of {sw['key']} on {_task_names(sw['tasks'])} (methods {group})", "",
                  f"| {sw['key']} | method | success |", "|---|---|---|"]
        lines += [f"| {x} | {label} | {_fmt(rates)} |" for label, x, rates in sw["points"]]
        lines.append(f"| | SFT start | {_fmt(sw['sft'])} |")
    lines += ["", "## Paired with the SFT start of the same seed (same init states; exact McNemar test)", "",
              "| method | both | only SFT | only this | p |", "|---|---|---|---|---|"]
    for m, p in paired.items():
        if not p["pairs"]:  # nothing paired yet: no test to show
            lines.append(f"| {m} | - | - | - | - |")
            continue
        lines.append(f"| {m} | {p['both']} | {p['only_sft']} | {p['only_method']} | {p['p_value']:.3f} |")
    lines += ["", "Cell by cell (`groups`: training iterations whose group had a success):", "",
              "| method | task | seed | this | SFT | both | only SFT | only this | p | groups | minutes |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (m, s, t, seed), c in sorted(cell_pairs.items(), key=lambda kc: (methods.index(kc[0][0]), kc[0][1:])):
        r, base = by_key[(m, s, t, seed)], by_key[(SFT, s, t, seed)]
        groups = r.get("group_success")
        groups = f"{round(groups * len(r['return_curve']))}/{len(r['return_curve'])}" if groups is not None else "-"
        minutes = f"{r['seconds'] / 60:.0f}" if r.get("seconds") else "-"
        lines.append(f"| {m} | {s} {t} | {seed} | {r['successes']}/{r['episodes']} | "
                     f"{base['successes']}/{base['episodes']} | {c['both']} | {c['only_sft']} | {c['only_method']} | "
                     f"{c['p_value']:.2f} | {groups} | {minutes} |")
    lines += ["", "## Wall time", "", "| method | runs | minutes per run |", "|---|---|---|"]
    for m in methods:
        secs = [r["seconds"] for r in records if r["method"] == m and r["seconds"]]
        if secs:
            lines.append(f"| {m} | {len(secs)} | {np.mean(secs) / 60:.1f} |")
    if cfg.adopted:
        lines += ["", "## Adopted runs (made outside the grid, checked against their cells' settings)", "",
                  "| cell | run | execution differences |", "|---|---|---|"]
        for a in cfg.adopted:
            lines.append(f"| {a.method}, {a.suite} task {a.task}, seed {a.seed} | {a.path} | "
                         f"{'; '.join(a.notes) or 'none'} |")
    plots = _plots(cfg, records, sweeps, out)
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    summary = {"finished": len(records), "total": total, "runs": records, "by_suite": suite_rows, "paired": paired,
               "sweeps": sweeps}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def _ranges(values: tuple[int, ...]) -> str:
    parts, start = [], values[0]
    for a, b in zip(values, values[1:] + (None,)):
        if b != a + 1:
            parts.append(f"{start}-{a}" if a != start else str(a))
            start = b
    return ",".join(parts)


def _task_names(tasks) -> str:
    return ", ".join(f"{s} {t}" for s, t in tasks)


def _seed_rates(cfg: ExperimentConfig, records: list[dict], method: str, tasks) -> list[float]:
    """Per seed, the mean success over ``tasks`` of ``method``; only seeds with every one of them done."""
    rate = {(r["suite"], r["task"], r["seed"]): r["successes"] / r["episodes"] for r in records if r["method"] == method}
    return [float(np.mean([rate[(s, t, seed)] for s, t in tasks])) for seed in cfg.seeds
            if all((s, t, seed) in rate for s, t in tasks)]


def sweep_points(cfg: ExperimentConfig, records: list[dict]) -> dict[str, dict]:
    """Each sweep of the grid as data for its table and plot, keyed by the declared name template.

    Per sweep: ``key`` (the first swept key, the x axis), ``tasks`` (the sweep's tasks), ``members`` (its
    methods' names), ``points``: ``(label, value, per-seed success rates)`` sorted by value, and ``sft``: the
    SFT start's per-seed rates on the same tasks (the baseline line). A method without overrides that runs on
    the sweep's tasks is a point too, at its default value, labelled with every swept key's default: it is
    the sweep's missing point when the defaults lie on it (TGRPO's a1 = 0.3, a2 = 0.7 in the paper's a1 sweep,
    where a1 + a2 = 1)."""
    sweeps = {}
    for group in dict.fromkeys(m.sweep_group for m in cfg.methods if m.sweep_group):
        members = [m for m in cfg.methods if m.sweep_group == group]
        key, tasks = members[0].sweep, cfg.method_tasks(members[0].name)
        keys = [key] + [k for k in members[0].overrides
                        if k != key and len({repr(m.overrides.get(k)) for m in members}) > 1]
        points = [(m.name, m.overrides[key], _seed_rates(cfg, records, m.name, tasks)) for m in members]
        for m in cfg.methods:
            if not m.overrides and set(tasks) <= set(cfg.method_tasks(m.name)):
                tc = cfg.train_config(m, *tasks[0], cfg.seeds[0])
                value = {k: functools.reduce(getattr, k.split("."), tc) for k in keys}
                label = f"{m.name} (" + ", ".join(f"{k}={v}" for k, v in value.items()) + ")"
                points.append((label, value[key], _seed_rates(cfg, records, m.name, tasks)))
        sweeps[group] = {"key": key, "tasks": tasks, "members": [m.name for m in members],
                         "points": sorted(points, key=lambda p: p[1]), "sft": _seed_rates(cfg, records, SFT, tasks)}
    return sweeps


def learning_curve_figure(cfg: ExperimentConfig, records: list[dict]):
    """One panel per task of the grid: each method's group return per iteration (mean over its finished seeds,
    running mean of 4), in the method's colour on every panel, with one legend for the figure; a task without
    a finished training run says so. None when no record has a return curve (only SFT cells)."""
    import matplotlib.pyplot as plt

    curves = [r for r in records if r.get("return_curve")]
    if not curves:
        return None
    colours = {m.name: f"C{i % 10}" for i, m in enumerate(cfg.methods)}
    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(5 * len(cfg.tasks) + 2, 3.6), squeeze=False,
                             layout="constrained")
    for ax, (s, t) in zip(axes[0], cfg.tasks):
        for m in cfg.methods:
            runs = [r["return_curve"] for r in curves if (r["method"], r["suite"], r["task"]) == (m.name, s, t)]
            if runs:
                n = min(map(len, runs))
                y = np.convolve(np.mean([c[:n] for c in runs], 0), np.ones(4) / 4, mode="valid")
                ax.plot(np.arange(len(y)) + 4, y, color=colours[m.name], label=m.name)
        if not ax.lines:
            ax.text(0.5, 0.5, "no finished training run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{s} task {t}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("group return (running mean of 4)")
    handles = {line.get_label(): line for ax in axes[0] for line in ax.lines}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=7)
    return fig


def sweep_figure(sw: dict):
    """One sweep (an entry of ``sweep_points``) on the full 0-100% scale: each finished seed's success as a dot,
    their mean with the sample std as an error bar, the defaults' point named, and the SFT start's mean over
    seeds as a dashed line in a band of its std. None when no point has a finished seed."""
    import matplotlib.pyplot as plt

    points = [(label, x, rates) for label, x, rates in sw["points"] if rates]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    xs = [x for _, x, _ in points]
    stats = [_mean_std(rates) for _, _, rates in points]
    ax.errorbar(xs, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                label="mean ± std over seeds")
    ax.scatter([x for _, x, rates in points for _ in rates], [100 * r for _, _, rates in points for r in rates],
               s=12, color="C0", alpha=0.5, label="one seed")
    for (label, x, _), (mean, _) in zip(points, stats):
        if label not in sw["members"]:  # the defaults' point (TGRPO's a1=0.3), named
            ax.annotate(label, (x, 100 * mean), fontsize=7, xytext=(4, -12), textcoords="offset points")
    if sw["sft"]:
        mean, std = _mean_std(sw["sft"])
        ax.axhline(100 * mean, color="gray", linestyle="--", label=f"SFT start ({len(sw['sft'])} seeds)")
        ax.axhspan(100 * (mean - std), 100 * (mean + std), color="gray", alpha=0.15)
    ax.set_ylim(0, 100)
    ax.set_xlabel(sw["key"])
    ax.set_ylabel("held-out success (%)")
    ax.set_title(f"sweep of {sw['key']} ({_task_names(sw['tasks'])})")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _plots(cfg: ExperimentConfig, records: list[dict], sweeps: dict[str, dict], out: Path) -> list[Path]:
    """Learning curves per task (``learning_curve_figure``) and one plot per sweep (``sweep_figure``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig = learning_curve_figure(cfg, records)
    if fig is not None:
        paths.append(out / "learning_curves.png")
        fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    for sw in sweeps.values():
        fig = sweep_figure(sw)
        if fig is not None:
            paths.append(out / f"sweep_{slug(sw['key'])}.png")
            fig.savefig(paths[-1], dpi=100)
            plt.close(fig)
    return paths
