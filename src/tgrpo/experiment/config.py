"""The grid's declaration: methods (with sweeps) x tasks x seeds, validated, and where each cell's files live."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tgrpo.config import apply_overrides, parse_index_list, train_config_from_dict
from tgrpo.data.hdf5 import default_demo_path, find_task_demo_file
from tgrpo.envs.suites import NUM_INIT_STATES, get_suite
from tgrpo.errors import ConfigError, TgrpoError, choice_error
from tgrpo.evaluation import EPISODES_FILE, EvalConfig, read_episodes

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

    @property
    def name(self) -> str:
        """The cell in words: ``"<method>, <suite> task <K>, seed <S>"``."""
        return f"{self.method}, {self.suite} task {self.task}, seed {self.seed}"


def same_suite_names(cells: list[Run]) -> str:
    """Cells of one suite in words, for messages: ``"SFT task 0 seed 0, TGRPO task 0 seed 0"``."""
    return ", ".join(f"{c.method} task {c.task} seed {c.seed}" for c in cells)


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

    def mismatches(self, run: Run, start: dict[str, str | None]) -> dict[str, tuple[str, list[Run]]]:
        """The ledger's cells that ``run`` must pair with but that started from another SFT model or other demos
        than ``start``: ``{"sft" | "demos": (their fingerprint, [cells])}``. A cell pairs with the recorded cells
        of its suite and seed (they share the SFT model) and, for the demos, of its task."""
        found: dict[str, tuple[str, list[Run]]] = {}
        for other in self.runs():
            rec = self.recorded(other) if other.suite == run.suite else None
            for what, same in (("sft", other.seed == run.seed), ("demos", other.task == run.task)):
                had, now = (rec or {}).get("start", {}).get(what), start.get(what)
                if same and had and now and had != now:
                    found.setdefault(what, (had, []))[1].append(other)
        return found

    def check_start(self, run: Run, start: dict[str, str | None]) -> None:
        """Refuse to run ``run`` from another SFT model or other demos than the ledger's cells of the same
        suite and seed (same task, for the demos) started from: its outcome would not pair with theirs."""
        mismatch = self.mismatches(run, start)
        if mismatch:
            names = {"sft": f"the SFT model {self.sft_checkpoint(run.suite, run.seed)}",
                     "demos": f"the demos {self.demo_path(run.suite, run.task)}"}
            raise TgrpoError(
                "; ".join(
                    f"{names[what]} (fingerprint {start[what][:12]}) is not what the ledger's cells "
                    f"{same_suite_names(cells)} started from ({had[:12]})"
                    for what, (had, cells) in mismatch.items()) +
                f". It was made again from other code or data, or on another machine, so this cell would not pair "
                f"with those. Their records stay in {self.ledger}; to run them again from the new start, rerun with "
                f"--supersede (it moves them to {self.superseded_root()}) or move them out of the ledger yourself.")

    def superseded_root(self) -> Path:
        """Where :meth:`supersede` keeps the records it moves out of the ledger: ``superseded/<ledger name>``
        beside the ledger."""
        ledger = Path(self.ledger)
        return ledger.parent / "superseded" / ledger.name

    def supersede(self, run: Run, start: dict[str, str | None]) -> list[Run]:
        """Move the records of the cells that ``run`` would not pair with (:meth:`mismatches`) out of the ledger,
        so that they are run again from ``start``; returns them. Nothing is deleted: a record goes to
        ``<superseded_root>/<sft|demos>-<its fingerprint, 12 digits>/<method>/<suite>/task<K>/seed<S>``, and
        its run directory, if there is one, is renamed ``<run dir>.superseded-<fingerprint>``, so that neither
        its evaluation nor its checkpoints are taken for the new start's. An adopted cell is refused: its run is
        the user's, named in the config."""
        import shutil

        moves: dict[Run, tuple[Path, Path, Path]] = {}  # cell -> (record, its new place, run dir's new name)
        for what, (had, cells) in self.mismatches(run, start).items():
            for cell in cells:
                if cell in moves:
                    continue
                if self.adoption(cell.key):
                    raise TgrpoError(f"cannot supersede {cell.name}: it is adopted from {cell.path}; remove its "
                                     "'adopt' entry to run it again")
                src = self.record_dir(cell)
                dest = self.superseded_root() / f"{what}-{had[:12]}" / src.relative_to(self.ledger)
                aside = Path(f"{cell.path}.superseded-{had[:12]}")
                if dest.exists() or (Path(cell.path).exists() and aside.exists()):
                    raise TgrpoError(f"cannot supersede {src}: {dest if dest.exists() else aside} exists already; "
                                     "move one of them by hand")
                moves[cell] = (src, dest, aside)
        for cell, (src, dest, aside) in moves.items():  # checked all first: nothing moves unless everything can
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dest))
            if Path(cell.path).exists():
                Path(cell.path).rename(aside)
        return list(moves)

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
            problems.append(f"no episodes of task {task} from init states {format_ranges(tuple(missing))}")
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))
        return []


def format_ranges(values: tuple[int, ...]) -> str:
    parts, start = [], values[0]
    for a, b in zip(values, values[1:] + (None,)):
        if b != a + 1:
            parts.append(f"{start}-{a}" if a != start else str(a))
            start = b
    return ",".join(parts)
