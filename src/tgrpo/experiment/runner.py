"""Running a grid: demos, SFT models and cells in order, each cell skipped, resumed or adopted, then the report."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from tgrpo.errors import StopRequested, TgrpoError
from tgrpo.experiment.config import CLOCK_FILE, SFT, ExperimentConfig, same_suite_names
from tgrpo.experiment.ledger import cell_clock, code_commit, record_cell
from tgrpo.experiment.report import report


def _stage(text: str) -> None:
    print(f"\n=== {text} ===", file=sys.stderr, flush=True)


def run_experiment(cfg: ExperimentConfig, tasks: tuple[tuple[str, int], ...] | None = None,
                   supersede: bool = False) -> dict:
    """Run every unfinished cell of the grid in order, then aggregate. Rerunning continues where it stopped.

    ``tasks``: run only the cells of these of the grid's tasks (the aggregate still covers the whole grid).
    With a ledger, each cell is first checked against the recorded cells that share its SFT model or demos
    (:meth:`ExperimentConfig.check_start`), and recorded when it finishes (:func:`record_cell`). A cell whose
    start differs from theirs (its SFT model or demos were made again with other code, or on another machine) is
    refused, unless ``supersede``: then those records are moved out of the ledger
    (:meth:`ExperimentConfig.supersede`) and the moved cells this invocation covers run again first, from the
    new start, before the cell itself (an SFT model's evaluation before the training that starts from it).

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
    queue = list(runs)
    while queue:
        run = queue.pop(0)
        if cfg.done(run):
            continue
        cell = f"run {runs.index(run) + 1}/{len(runs)}: {run.name}"
        try:
            demos([(run.suite, run.task)])  # its keyposes (and, for SFT, its suite's below), collected when needed
            d = cfg.sft_dir(run.suite, run.seed)  # the SFT model this cell starts from (or evaluates)
            if not cfg.sft_checkpoints.get(run.suite, {}).get(run.seed) and not (d / "sft_summary.json").exists():
                need(f"the SFT model of {run.suite} seed {run.seed}", lambda: sft_model(run.suite, run.seed))
            if cfg.ledger:
                start = cfg.start(run.suite, run.task, run.seed)
                moved = cfg.supersede(run, start) if supersede else []  # none when the start pairs
                if moved:
                    print(f"superseded: {len(moved)} recorded cells started from another SFT model or other demos "
                          f"than {run.name} starts from; their records moved to {cfg.superseded_root()}: "
                          f"{same_suite_names(moved)}", file=sys.stderr)
                    queue[:0] = [m for m in runs if m in moved] + [run]  # run again, in grid order, before this one
                    continue
                cfg.check_start(run, start)
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
