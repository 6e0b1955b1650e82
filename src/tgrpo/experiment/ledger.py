"""A cell's record: its clock while it runs, its result when done, and the committed ledger that outlives ``out``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tgrpo.evaluation import EPISODES_FILE, read_episodes
from tgrpo.experiment.config import CELL_FILE, CLOCK_FILE, SFT, ExperimentConfig, Run


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
    SFT cell, the code version and the machine that recorded it (:func:`tgrpo.checkpoint.machine`).
    ``cell.json`` is written last, whole, so an interrupted record is not taken for one. Run directories hold
    gigabytes and are not versioned; the ledger holds some kilobytes per cell, so committing it keeps a long
    grid's results when its run directories are lost, and the numbers in the docs traceable to every episode."""
    import shutil

    import tgrpo
    from tgrpo.checkpoint import machine

    dest = cfg.record_dir(run)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (EPISODES_FILE, "results.json"):
        shutil.copyfile(cfg.eval_dir(run) / name, dest / name)
    code = {"tgrpo": tgrpo.__version__, "commit": code_commit(), "invocations": read_clock(run).get("invocations")}
    rec = cell_result(cfg, run) | {"start": cfg.start(run.suite, run.task, run.seed), "code": code,
                                   "machine": machine()}
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
