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

Modules, in the order a grid uses them: :mod:`~tgrpo.experiment.config` (the declaration, validated; where a
cell's files live), :mod:`~tgrpo.experiment.runner` (running the cells), :mod:`~tgrpo.experiment.ledger` (a
cell's clock and record, the committed ledger) and :mod:`~tgrpo.experiment.report` (tables and plots).
"""

from tgrpo.experiment.config import (
    CELL_FILE, CLOCK_FILE, EXECUTION_FIELDS, SFT, Adoption, ExperimentConfig, Method, Run, grid_subset, slug,
)
from tgrpo.experiment.ledger import cell_clock, cell_result, code_commit, collect_results, read_clock, record_cell, time_left
from tgrpo.experiment.report import learning_curve_figure, paper_table, report, sweep_figure, sweep_points
from tgrpo.experiment.runner import run_experiment

__all__ = [
    "CELL_FILE", "CLOCK_FILE", "EXECUTION_FIELDS", "SFT", "Adoption", "ExperimentConfig", "Method", "Run",
    "cell_clock", "cell_result", "code_commit", "collect_results", "grid_subset", "learning_curve_figure",
    "paper_table", "read_clock", "record_cell", "report", "run_experiment", "slug", "sweep_figure", "sweep_points",
    "time_left",
]
