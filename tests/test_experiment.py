"""Experiment grids: config validation, sweep expansion, aggregation by hand numbers, a miniature real grid."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tgrpo.errors import ConfigError
from tgrpo.experiment import (SFT, ExperimentConfig, learning_curve_figure, paper_table, report, slug,
                              sweep_figure)

BASE = {"out": "runs/x", "tasks": ["libero_object:0"], "seeds": [0], "methods": [{"name": "TGRPO"}]}


@pytest.mark.parametrize("change, pattern", [
    ({"tasks": ["libero_100:0"]}, "LIBERO suite 'libero_100'.*libero_spatial"),
    ({"tasks": ["libero_object:12"]}, r"task index for libero_object 12.*0\.\.9"),
    ({"tasks": ["object-0"]}, "must be \"suite:task\""),
    ({"methods": []}, "non-empty 'methods'"),
    ({"methods": [{"name": "SFT"}]}, "not 'SFT'"),
    ({"methods": [{"name": "a"}, {"name": "a"}]}, "must be distinct"),
    ({"methods": [{"name": "x", "sweep": {"algo.a1": [0.1, 0.3], "algo.a2": [0.9]}}]}, "equal length"),
    ({"methods": [{"name": "bad", "overrides": {"algo.advantage": "ppo"}}]}, "method 'bad'.*advantage 'ppo'"),
    ({"methods": [{"name": "x", "override": {}}]}, r"unknown key\(s\) \['override'\]"),
    ({"methods": [{"name": "x", "tasks": ["libero_goal:1"]}]},
     r"unknown methods\[0\] \(x\) task 'libero_goal:1'; valid choices: libero_object:0"),
    ({"methods": [{"name": "x", "tasks": []}]}, "tasks must be a non-empty list"),
    ({"seeds": [0, 0]}, "distinct integers"),
    ({"eval": {"init_states": "45-55"}}, r"init_states must be indices in 0\.\.49"),
    ({"sft": {"stepz": 3}}, r"unknown sft key\(s\) \['stepz'\]"),
    ({"sweeps": []}, r"unknown experiment key\(s\) \['sweeps'\]"),
])
def test_bad_experiment_config_is_named(change, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ExperimentConfig.from_dict(BASE | change)


def test_sweeps_expand_zipped_with_the_values_in_the_names():
    cfg = ExperimentConfig.from_dict(BASE | {"seeds": [0, 1], "methods": [
        {"name": "a1={algo.a1}", "sweep": {"algo.a1": [0.1, 0.5], "algo.a2": [0.9, 0.5]}},
        {"name": "N", "sweep": {"rollout.group_size": [2, 8]}}]})
    assert [m.name for m in cfg.methods] == ["a1=0.1", "a1=0.5", "N rollout.group_size=2", "N rollout.group_size=8"]
    tc = cfg.train_config(cfg.methods[0], "libero_object", 0, 1)
    assert (tc.algo.a1, tc.algo.a2, tc.seed, tc.eval_every, tc.eval_init_states) == (0.1, 0.9, 1, 0, tuple(range(50)))
    assert tc.policy.checkpoint.endswith("sft/libero_object/seed1/best") and tc.policy.lora_rank == 16
    runs = cfg.runs()  # the SFT evaluations first, then seed by seed
    assert [r.method for r in runs[:2]] == [SFT, SFT] and len(runs) == 2 + 2 * 4
    assert slug("GRPO (w/o step)") == "GRPO_w_o_step"


def test_paper_table_hand_computed():
    table = paper_table({"SFT": {"libero_object": [0.4, 0.6]},
                         "TGRPO": {"libero_object": [0.5, 0.7], "libero_goal": [0.9, 0.9]}})
    lines = table.splitlines()
    assert lines[0] == "| method | Spatial | Object | Goal | Long | Average |"
    assert lines[2] == "| SFT | - | 50.0 ± 14.1 | - | - | - |"  # no Goal: no average to compare
    assert lines[3] == "| TGRPO | - | 60.0 ± 14.1 | 90.0 ± 0.0 | - | 75.0 ± 7.1 |"  # averages (0.7, 0.8)


def test_a_method_restricted_to_some_tasks_runs_and_reports_only_there(tmp_path):
    cfg = ExperimentConfig.from_dict(BASE | {
        "out": str(tmp_path), "tasks": ["libero_object:0", "libero_goal:6"], "seeds": [0, 1],
        "train": {"iterations": 2}, "eval": {"init_states": "0-1"},
        "methods": [{"name": "TGRPO"}, {"name": "a1={algo.a1}", "sweep": {"algo.a1": [0.1], "algo.a2": [0.9]},
                                       "tasks": ["libero_goal:6", "libero_object:0", "libero_goal:6"]},
                    {"name": "G", "overrides": {"algo.advantage": "grpo"}, "tasks": ["libero_goal:6"]}]})
    assert cfg.method("a1=0.1").tasks == (("libero_object", 0), ("libero_goal", 6))  # the grid's order, once
    cells = [(r.method, r.suite, r.seed) for r in cfg.runs()]
    assert len(cells) == 4 + 4 + 4 + 2 and cells[-2:] == [("G", "libero_goal", 0), ("G", "libero_goal", 1)]
    for run in cfg.runs():
        _fake_eval(cfg.eval_dir(run), [True, run.method == "G"], run.task)
    summary = report(cfg)
    assert summary["finished"] == summary["total"] == 14
    assert summary["by_suite"]["G"] == {"libero_goal": [1.0, 1.0]}
    md = (tmp_path / "results.md").read_text()
    assert "| G | - | - | 100.0 ± 0.0 | - | - |" in md and "| TGRPO | - | 50.0 ± 0.0 | 50.0 ± 0.0 | - | 50.0 ± 0.0 |" in md
    assert "| G | - | 100.0 ± 0.0 (2/2, 2/2) |" in md


def _fake_eval(path, outcomes, task=0):
    path.mkdir(parents=True)
    path.joinpath("episodes.jsonl").write_text("".join(
        json.dumps({"task": task, "init_state": i, "success": ok, "steps": 100}) + "\n" for i, ok in enumerate(outcomes)))
    path.joinpath("results.json").write_text("{}")


def test_report_pools_paired_outcomes_and_seed_spread(tmp_path):
    cfg = ExperimentConfig.from_dict(BASE | {"out": str(tmp_path), "seeds": [0, 1], "train": {"iterations": 3},
                                             "eval": {"init_states": "0-3"}})
    outcomes = {(SFT, 0): [1, 1, 0, 0], (SFT, 1): [1, 0, 0, 0], ("TGRPO", 0): [1, 1, 1, 0], ("TGRPO", 1): [0, 1, 1, 1]}
    for run in cfg.runs():
        _fake_eval(cfg.eval_dir(run), [bool(x) for x in outcomes[(run.method, run.seed)]])
    assert cfg.eval_dir(cfg.runs()[-1]).name == "iter_0003"
    summary = report(cfg)
    assert summary["finished"] == summary["total"] == 4
    assert summary["by_suite"]["TGRPO"]["libero_object"] == [0.75, 0.75]
    # seed 0: both 2, only TGRPO 1; seed 1: only SFT 1 (state 0), only TGRPO 3
    assert summary["paired"]["TGRPO"] == {"pairs": 8, "both": 2, "only_sft": 1, "only_method": 4, "p_value": pytest.approx(0.375)}
    md = (tmp_path / "results.md").read_text()
    assert "| SFT | 37.5 ± 17.7 (2/4, 1/4) |" in md and "| TGRPO | 75.0 ± 0.0 (3/4, 3/4) |" in md
    assert "| TGRPO | libero_object 0 | 0 | 3/4 | 2/4 | 2 | 0 | 1 | 1.00 | - | - |" in md  # cell by cell
    assert "| TGRPO | libero_object 0 | 1 | 3/4 | 1/4 | 0 | 1 | 3 | 0.62 | - | - |" in md  # p = 2 * 5/16


def test_sweep_table_adds_the_defaults_point_and_compares_with_sft_on_the_sweeps_task(tmp_path):
    cfg = ExperimentConfig.from_dict(BASE | {
        "out": str(tmp_path), "tasks": ["libero_object:0", "libero_goal:6"], "seeds": [0, 1],
        "train": {"iterations": 2}, "eval": {"init_states": "0-3"},
        "methods": [{"name": "TGRPO"}, {"name": "G", "overrides": {"algo.advantage": "grpo"}},
                    {"name": "a1={algo.a1}", "sweep": {"algo.a1": [0.9, 0.1], "algo.a2": [0.1, 0.9]},
                     "tasks": ["libero_object:0"]}]})
    outcomes = {(SFT, "libero_object", 0): [1, 0, 0, 0], (SFT, "libero_object", 1): [1, 1, 0, 0],
                ("TGRPO", "libero_object", 0): [1, 1, 0, 0], ("TGRPO", "libero_object", 1): [1, 1, 1, 0],
                ("a1=0.1", "libero_object", 0): [1, 1, 1, 1], ("a1=0.1", "libero_object", 1): [1, 1, 1, 1],
                ("a1=0.9", "libero_object", 0): [0, 0, 0, 0]}  # a1=0.9 seed 1 not finished
    for run in cfg.runs():  # the goal task and G succeed or fail everywhere: none of it may enter the sweep
        if (run.method, run.suite, run.seed) != ("a1=0.9", "libero_object", 1):
            default = [run.suite == "libero_goal"] * 4
            _fake_eval(cfg.eval_dir(run), [bool(x) for x in outcomes.get((run.method, run.suite, run.seed), default)],
                       run.task)
    summary = report(cfg)
    assert [p[:2] for p in summary["sweeps"]["a1={algo.a1}"]["points"]] == [
        ("a1=0.1", 0.1), ("TGRPO (algo.a1=0.3, algo.a2=0.7)", 0.3), ("a1=0.9", 0.9)]
    md = (tmp_path / "results.md").read_text()
    table = md.split("## Sweep of algo.a1 on libero_object 0 (methods a1={algo.a1})\n\n")[1].split("\n\n")[0].splitlines()
    assert table == ["| algo.a1 | method | success |", "|---|---|---|", "| 0.1 | a1=0.1 | 100.0 ± 0.0 |",
                     "| 0.3 | TGRPO (algo.a1=0.3, algo.a2=0.7) | 62.5 ± 17.7 |", "| 0.9 | a1=0.9 | 0.0 |",
                     "| | SFT start | 37.5 ± 17.7 |"]
    assert (tmp_path / f"sweep_{slug('algo.a1')}.png").exists()


def test_learning_curves_keep_a_method_s_colour_on_every_panel_with_one_legend():
    cfg = ExperimentConfig.from_dict(BASE | {"tasks": ["libero_object:0", "libero_goal:6", "libero_10:5"],
                                             "seeds": [0, 1], "methods": [{"name": "TGRPO"}, {"name": "G"}]})
    rec = lambda m, s, t, seed, c: {"method": m, "suite": s, "task": t, "seed": seed, "return_curve": c}  # noqa: E731
    records = [rec(SFT, "libero_object", 0, 0, None),
               rec("TGRPO", "libero_object", 0, 0, [0, 2, 4, 6, 8]), rec("TGRPO", "libero_object", 0, 1, [2, 2, 2, 2]),
               rec("G", "libero_object", 0, 0, [1, 1, 1, 1]), rec("TGRPO", "libero_goal", 6, 0, [5, 5, 5, 5])]
    assert learning_curve_figure(cfg, records[:1]) is None  # only SFT cells: nothing to draw
    fig = learning_curve_figure(cfg, records)
    obj, goal, long_ = fig.axes[:3]
    # seeds averaged over their common length (4), then a running mean of 4: one point, at iteration 4
    assert [(line.get_label(), list(line.get_xdata()), list(line.get_ydata())) for line in obj.lines] == [
        ("TGRPO", [4], [pytest.approx(2.5)]), ("G", [4], [pytest.approx(1.0)])]
    assert goal.lines[0].get_color() == obj.lines[0].get_color() != obj.lines[1].get_color()
    assert not long_.lines and [t.get_text() for t in long_.texts] == ["no finished training run"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["TGRPO", "G"]


def test_sweep_figure_shows_every_seed_on_the_full_scale_with_the_sft_band():
    sw = {"key": "algo.a1", "tasks": [("libero_object", 0)], "members": ["a1=0.1", "a1=0.9"],
          "points": [("a1=0.1", 0.1, [0.4, 0.6]), ("TGRPO (algo.a1=0.3, algo.a2=0.7)", 0.3, [0.5]),
                     ("a1=0.9", 0.9, [])], "sft": [0.2, 0.4]}
    assert sweep_figure(sw | {"points": [("a1=0.9", 0.9, [])]}) is None  # no finished seed anywhere
    ax = sweep_figure(sw).axes[0]
    assert ax.get_ylim() == (0, 100)
    line = ax.lines[0]  # the means; a1=0.9 has no finished seed and is left out
    assert list(line.get_xdata()) == [0.1, 0.3] and list(line.get_ydata()) == pytest.approx([50, 50])
    from matplotlib.collections import PathCollection

    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 1 and np.allclose(dots[0].get_offsets(), [[0.1, 40], [0.1, 60], [0.3, 50]])
    assert [t.get_text() for t in ax.texts] == ["TGRPO (algo.a1=0.3, algo.a2=0.7)"]
    sft = [ln for ln in ax.lines if ln.get_label().startswith("SFT start")]
    assert sft[0].get_label() == "SFT start (2 seeds)" and list(sft[0].get_ydata()) == pytest.approx([30, 30])


@pytest.mark.parametrize("entry, pattern", [
    ({"method": "PPO", "path": "x"}, r"unknown adopt\[0\] method 'PPO'; valid choices: SFT, TGRPO"),
    ({"seed": 3}, r"unknown adopt\[0\] seed 3; valid choices: 0"),
    ({"task": "libero_object:1"}, r"unknown adopt\[0\] task 'libero_object:1'; valid choices: libero_object:0"),
    ({"paht": "x"}, "exactly method, task, seed and path"),
    ({}, r"not a training run directory \(no train_config.json\)"),
    ({"method": SFT}, "not a finished evaluation directory"),
])
def test_bad_adoption_is_named(tmp_path, entry, pattern):
    ok = {"method": "TGRPO", "task": "libero_object:0", "seed": 0, "path": str(tmp_path / "run")}
    with pytest.raises(ConfigError, match=pattern):
        ExperimentConfig.from_dict(BASE | {"adopt": [ok | entry]})


def test_adopted_evaluation_must_record_its_checkpoint_and_states(tmp_path):
    ckpt = str(tmp_path / "sft")
    base = BASE | {"out": str(tmp_path / "exp"), "sft": {"checkpoints": {"libero_object": {"0": ckpt}}},
                   "eval": {"init_states": "0-3"}}
    entry = {"method": SFT, "task": "libero_object:0", "seed": 0, "path": str(tmp_path / "ev")}
    _fake_eval(tmp_path / "ev", [True, False, True])  # results.json without a config: an old evaluation
    with pytest.raises(ConfigError, match="does not record which checkpoint"):
        ExperimentConfig.from_dict(base | {"adopt": [entry]})
    config = {"suite": "libero_object", "max_steps": None, "temperature": 0.0, "checkpoint": str(tmp_path / "other")}
    (tmp_path / "ev/results.json").write_text(json.dumps({"config": config}))
    with pytest.raises(ConfigError, match=r"checkpoint .*other \(the cell: .*sft\); no episodes of task 0 from init states 3"):
        ExperimentConfig.from_dict(base | {"adopt": [entry]})
    with (tmp_path / "ev/episodes.jsonl").open("a") as fh:  # state 3, and one of another task (ignored)
        fh.write(json.dumps({"task": 0, "init_state": 3, "success": True, "steps": 9}) + "\n")
        fh.write(json.dumps({"task": 1, "init_state": 0, "success": True, "steps": 9}) + "\n")
    (tmp_path / "ev/results.json").write_text(json.dumps({"config": config | {"checkpoint": ckpt}}))
    cfg = ExperimentConfig.from_dict(base | {"adopt": [entry]})
    assert cfg.runs()[0].path == str(tmp_path / "ev") and cfg.done(cfg.runs()[0])
    sft = report(cfg)["runs"][0]
    assert (sft["successes"], sft["episodes"]) == (3, 4)


def test_a_failed_run_is_reported_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    import types

    import tgrpo.data.collect
    import tgrpo.evaluation
    import tgrpo.policy.registry
    import tgrpo.sft
    import tgrpo.train
    from tgrpo.errors import TgrpoError
    from tgrpo.experiment import run_experiment

    cfg = ExperimentConfig.from_dict(BASE | {
        "out": str(tmp_path), "tasks": ["libero_object:0", "libero_goal:6"], "seeds": [0, 1],
        "eval": {"init_states": "0-1"},
        "methods": [{"name": "TGRPO"}, {"name": "broken", "overrides": {"algo.a1": 0.5}}]})
    eval_dir = {run.path: cfg.eval_dir(run) for run in cfg.runs()}
    calls = {"demos": [], "sft": [], "train": []}

    def collect_task(suite, task, *args, **kwargs):
        calls["demos"].append((suite, task))
        if suite == "libero_goal":
            raise TgrpoError("the scripted expert solved only 3 of 104 episodes")
        return types.SimpleNamespace(skipped=True)

    def train_sft(sft_cfg):
        calls["sft"].append(sft_cfg.out)
        Path(sft_cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(sft_cfg.out) / "sft_summary.json").write_text("{}")

    def train(tcfg):
        calls["train"].append(tcfg.out)
        if tcfg.algo.a1 == 0.5:
            raise TgrpoError("the rollout failed 4 times in a row; stopping")
        _fake_eval(eval_dir[tcfg.out], [True, False])

    monkeypatch.setattr(tgrpo.data.collect, "collect_task", collect_task)
    monkeypatch.setattr(tgrpo.sft, "train_sft", train_sft)
    monkeypatch.setattr(tgrpo.train, "train", train)
    monkeypatch.setattr(tgrpo.policy.registry, "load_policy", lambda checkpoint: None)
    monkeypatch.setattr(tgrpo.evaluation, "evaluate", lambda policy, ecfg: _fake_eval(Path(ecfg.out), [True, True]))
    with pytest.raises(TgrpoError, match=r"(?s)8 of the 12 runs did not finish.*"
                                         r"broken, libero_object task 0, seed 0: the rollout failed"):
        run_experiment(cfg)
    # the goal task's demos were tried once; its 6 cells were skipped, the object task's cells all ran
    assert calls["demos"].count(("libero_goal", 6)) == 1
    assert len(calls["train"]) == 4 and len(calls["sft"]) == 2
    assert report(cfg)["finished"] == 4  # SFT and TGRPO on libero_object, both seeds
    err = capsys.readouterr().err
    assert "skipped: the demonstrations of libero_goal task 6 failed earlier in this run" in err
    assert "rerunning the command retries this one" in err


def test_cell_clock_saves_while_running_and_sums_invocations(tmp_path):
    import time

    from tgrpo.experiment import cell_clock, code_commit

    record, fields = tmp_path / "cell" / "run.json", {"method": "TGRPO", "seed": 0}
    with cell_clock(record, fields, every_s=0.05):
        time.sleep(0.3)
        during = json.loads(record.read_text())  # what a kill at this point would leave
    first = json.loads(record.read_text())
    assert during["method"] == "TGRPO" and 0.05 <= during["seconds"] <= first["seconds"]
    assert 0.3 <= first["seconds"] < 2.0
    with pytest.raises(RuntimeError), cell_clock(record, fields, every_s=10.0):  # a failed attempt counts too
        time.sleep(0.2)
        raise RuntimeError("worker died")
    second = json.loads(record.read_text())
    assert first["seconds"] + 0.2 <= second["seconds"] < first["seconds"] + 2.0
    assert [f.name for f in record.parent.iterdir()] == ["run.json"]  # no temporary file left behind
    commit = code_commit()
    assert [i["commit"] for i in second["invocations"]] == [commit, commit]  # the code each invocation ran
    assert sum(i["seconds"] for i in second["invocations"]) == pytest.approx(second["seconds"])
    assert second["invocations"][0]["seconds"] == first["seconds"]


def test_cell_clock_keeps_time_saved_without_invocations_and_reads_the_commit_once(tmp_path, monkeypatch):
    import re
    import subprocess

    from tgrpo.experiment import cell_clock, code_commit

    record = tmp_path / "run.json"
    record.write_text(json.dumps({"method": "TGRPO", "seconds": 100.0}))  # saved by a version without the list
    commit = code_commit()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("git read again"))  # cached per process
    with cell_clock(record, {"method": "TGRPO"}, every_s=10.0):
        pass
    rec = json.loads(record.read_text())
    assert rec["invocations"][0] == {"commit": None, "seconds": 100.0}  # earlier time: its code is unknown
    assert rec["invocations"][1]["commit"] == commit and rec["seconds"] >= 100.0
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)  # None outside a git checkout


@pytest.mark.sim
@pytest.mark.slow
def test_miniature_experiment_runs_every_cell_and_resumes(tmp_path):
    from tgrpo.experiment import run_experiment

    data = {"out": str(tmp_path / "exp"), "tasks": ["libero_object:0"], "seeds": [0],
            "demos": {"root": str(tmp_path / "demos"), "num_demos": 1, "num_envs": 1},
            "sft": {"steps": 2, "batch_size": 4, "eval_every": 1, "save_every": 1, "num_threads": 1},
            "train": {"iterations": 1, "num_threads": 1, "rollout": {"group_size": 2, "max_steps": 6},
                      "algo": {"epochs": 1}},
            "eval": {"init_states": "49", "num_envs": 1},
            "methods": [{"name": "TGRPO"}, {"name": "DPO", "overrides": {"algo.objective": "dpo"}}]}
    cfg = ExperimentConfig.from_dict(data)
    summary = run_experiment(cfg)
    assert summary["finished"] == summary["total"] == 3
    assert {r["method"] for r in summary["runs"]} == {SFT, "TGRPO", "DPO"}
    assert all(r["episodes"] == 1 for r in summary["runs"])
    state = json.loads((tmp_path / "exp/runs/DPO/libero_object/task0/seed0/checkpoint/trainer_state.json").read_text())
    assert json.loads((tmp_path / "exp/runs/DPO/libero_object/task0/seed0/train_config.json").read_text())[
        "algo"]["objective"] == "dpo"
    assert state["iteration"] == 1 and "update/preference_margin" in state["history"][0]
    md = (tmp_path / "exp" / "results.md").read_text()
    assert "3/3 runs finished" in md and "| DPO |" in md and (tmp_path / "exp" / "learning_curves.png").exists()
    mtime = (tmp_path / "exp/sft/libero_object/seed0/sft_summary.json").stat().st_mtime
    again = run_experiment(cfg)  # everything is done: nothing reruns
    assert again["runs"] == summary["runs"]
    assert (tmp_path / "exp/sft/libero_object/seed0/sft_summary.json").stat().st_mtime == mtime

    # a second grid adopts the first's runs: one differing only in execution (threads), one refused (lr)
    first = tmp_path / "exp/runs"
    adopt = [{"method": "TGRPO", "task": "libero_object:0", "seed": 0, "path": str(first / "TGRPO/libero_object/task0/seed0")},
             {"method": SFT, "task": "libero_object:0", "seed": 0, "path": str(first / "SFT/libero_object/task0/seed0/eval")}]
    second = data | {"out": str(tmp_path / "exp2"), "methods": [{"name": "TGRPO"}], "adopt": adopt,
                     "train": data["train"] | {"num_threads": 2},
                     "sft": {"checkpoints": {"libero_object": {"0": str(cfg.sft_checkpoint("libero_object", 0))}}}}
    cfg2 = ExperimentConfig.from_dict(second)
    assert all(map(cfg2.done, cfg2.runs())) and cfg2.adopted[0].notes == ("num_threads = 1 (the grid: 2)",)
    summary2 = report(cfg2)
    assert [r["outcomes"] for r in summary2["runs"]] == [r["outcomes"] for r in summary["runs"] if r["method"] != "DPO"]
    assert "## Adopted runs" in (tmp_path / "exp2/results.md").read_text()
    with pytest.raises(ConfigError, match=r"adopt\[0\].*other settings than the cell: algo.lr = 0.0001 \(the cell: 0.001\)"):
        ExperimentConfig.from_dict(second | {"train": second["train"] | {"algo": {"epochs": 1, "lr": 1e-3}}})


def test_the_ledger_keeps_cells_when_run_directories_are_lost_and_refuses_another_start(tmp_path, monkeypatch):
    import shutil
    import types

    import tgrpo.data.collect
    import tgrpo.evaluation
    import tgrpo.policy.registry
    import tgrpo.sft
    import tgrpo.train
    from tgrpo.errors import TgrpoError
    from tgrpo.experiment import run_experiment

    cfg = ExperimentConfig.from_dict(BASE | {
        "out": str(tmp_path / "out"), "ledger": str(tmp_path / "ledger"), "tasks": ["libero_object:0", "libero_goal:6"],
        "eval": {"init_states": "0-1"}, "methods": [{"name": "TGRPO"}, {"name": "G", "overrides": {"algo.a1": 0.5},
                                                                         "tasks": ["libero_object:0"]}]})
    eval_dir = {run.path: cfg.eval_dir(run) for run in cfg.runs()}
    made = {"weights": "w1", "sft": [], "train": []}

    def train_sft(sft_cfg):  # an SFT model whose weights are made["weights"]
        made["sft"].append(sft_cfg.out)
        (Path(sft_cfg.out) / "best").mkdir(parents=True, exist_ok=True)
        (Path(sft_cfg.out) / "best" / "policy.safetensors").write_text(made["weights"])
        (Path(sft_cfg.out) / "sft_summary.json").write_text('{"final": {"val/token_acc": 0.9}}')

    def train(tcfg):
        made["train"].append(tcfg.out)
        _fake_eval(eval_dir[tcfg.out], [True, tcfg.algo.a1 == 0.5], tcfg.task)

    monkeypatch.setattr(tgrpo.data.collect, "collect_task", lambda *a, **k: types.SimpleNamespace(skipped=True))
    monkeypatch.setattr(tgrpo.sft, "train_sft", train_sft)
    monkeypatch.setattr(tgrpo.train, "train", train)
    monkeypatch.setattr(tgrpo.policy.registry, "load_policy", lambda checkpoint: None)
    monkeypatch.setattr(tgrpo.evaluation, "evaluate",
                        lambda policy, ecfg: _fake_eval(Path(ecfg.out), [True, False], ecfg.tasks[0]))
    object_cells = [r for r in cfg.runs() if r.suite == "libero_object"]
    run_experiment(cfg, tasks=(("libero_object", 0),))  # only the object task's three cells
    assert len(made["sft"]) == 1 and len(made["train"]) == 2
    assert [cfg.recorded(r) is not None for r in cfg.runs()] == [r.suite == "libero_object" for r in cfg.runs()]
    sft_cell = cfg.recorded(object_cells[0])
    assert sft_cell["outcomes"] == {"0:0": True, "0:1": False} and sft_cell["sft_summary"]["final"]["val/token_acc"] == 0.9
    assert sft_cell["start"]["sft"] == cfg.recorded(object_cells[1])["start"]["sft"] is not None
    ran = sft_cell["code"]["invocations"]  # the cell's run.json, copied: one invocation, this process's code
    assert [i["commit"] for i in ran] == [sft_cell["code"]["commit"]] and ran[0]["seconds"] >= 0
    assert sft_cell["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # what floats depend on
    assert (cfg.record_dir(object_cells[2]) / "episodes.jsonl").read_text() == \
        (eval_dir[object_cells[2].path] / "episodes.jsonl").read_text()
    before = report(cfg)

    shutil.rmtree(tmp_path / "out")  # a new checkout: run directories and models gone, the ledger committed
    assert all(map(cfg.done, object_cells)) and not any(map(cfg.evaluated, object_cells))
    assert report(cfg)["runs"] == before["runs"]
    shutil.rmtree(cfg.record_dir(object_cells[2]))  # G's record removed: it runs again, from a retrained model
    made["weights"] = "w2"  # ... which came out different
    with pytest.raises(TgrpoError, match=r"1 of the 5 runs did not finish(?s:.*)G, libero_object task 0, seed 0: the SFT "
                                         r"model .*libero_object/seed0/best \(fingerprint [0-9a-f]{12}\) is not what the "
                                         r"ledger's cells SFT task 0 seed 0, TGRPO task 0 seed 0 started from"):
        run_experiment(cfg)  # the goal task's cells run (no record to disagree with); G is refused
    assert cfg.recorded(cfg.runs()[1]) is not None and cfg.recorded(object_cells[2]) is None
    made["weights"] = "w1"  # retrained identically (as SFT does, tests/test_sft.py): G runs and pairs
    shutil.rmtree(tmp_path / "out/sft/libero_object")
    summary = run_experiment(cfg)
    assert summary["finished"] == summary["total"] == 5 and cfg.recorded(object_cells[2])["successes"] == 2

    # another machine: the SFT model comes out different again, and TGRPO's record is to be made again from it.
    # With supersede, the cells that pair with it (SFT, G) leave the ledger, kept, and run again, the SFT
    # evaluation before any training; without, TGRPO was refused (above)
    old, goal = cfg.recorded(object_cells[0])["start"]["sft"], cfg.recorded(cfg.runs()[1])
    made["weights"] = "w3"
    shutil.rmtree(tmp_path / "out/sft/libero_object")
    shutil.rmtree(cfg.record_dir(object_cells[1]))
    calls = []
    monkeypatch.setattr(tgrpo.evaluation, "evaluate", lambda policy, ecfg: calls.append("evaluate SFT") or
                        _fake_eval(Path(ecfg.out), [True, False], ecfg.tasks[0]))
    monkeypatch.setattr(tgrpo.train, "train", lambda tcfg: calls.append(f"train {tcfg.algo.a1}") or train(tcfg))
    summary = run_experiment(cfg, supersede=True)
    assert summary["finished"] == summary["total"] == 5
    assert calls == ["evaluate SFT", "train 0.5", "train 0.3"]  # the moved cells in grid order, then TGRPO
    new = cfg.recorded(object_cells[0])["start"]["sft"]
    assert new != old and all(cfg.recorded(r)["start"]["sft"] == new for r in object_cells)
    kept = tmp_path / "superseded" / "ledger" / f"sft-{old[:12]}"
    assert sorted(str(p.parent.relative_to(kept)) for p in kept.rglob("cell.json")) == \
        sorted(str(cfg.record_dir(r).relative_to(cfg.ledger)) for r in (object_cells[0], object_cells[2]))
    assert Path(f"{object_cells[2].path}.superseded-{old[:12]}", "eval").is_dir()  # G's old run, set aside
    assert cfg.recorded(cfg.runs()[1]) == goal  # the other suite's cells are not touched


def test_dry_run_lists_the_chosen_tasks_cells_and_names_a_task_outside_the_grid(tmp_path, capsys):
    from tgrpo.cli import main

    cfg_path = tmp_path / "grid.json"
    cfg_path.write_text(json.dumps(BASE | {"out": str(tmp_path / "out"), "ledger": str(tmp_path / "ledger"),
                                           "tasks": ["libero_object:0", "libero_goal:6"], "seeds": [0, 1]}))
    cfg = ExperimentConfig.load(cfg_path)
    _fake_eval(cfg.eval_dir(cfg.runs()[1]), [True])  # SFT on the goal task, seed 0: evaluated, not recorded
    Path(cfg.runs()[1].path, "run.json").write_text('{"seconds": 720}')
    tgrpo_goal = [r for r in cfg.runs() if r.method == "TGRPO" and r.suite == "libero_goal"]
    _fake_eval(cfg.eval_dir(tgrpo_goal[0]), [False])
    Path(tgrpo_goal[0].path, "run.json").write_text('{"seconds": 3000}')
    assert main(["experiment", str(cfg_path), "--dry-run", "--tasks", "libero_goal:6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:-2]] == [["done", "SFT"], ["todo", "SFT"], ["done", "TGRPO"],
                                                         ["todo", "TGRPO"]]
    assert all("libero_goal task 6" in line for line in lines[:-2])
    assert lines[-2] == f"2/4 runs done (0 recorded in the ledger {tmp_path / 'ledger'})"
    # one SFT evaluation left at 12 min, one training run at 50 min
    assert lines[-1].startswith("about 1.0 h left at the finished cells' mean wall time (SFT evaluation 12 min, "
                                "training run 50 min), plus")
    assert main(["experiment", str(cfg_path), "--dry-run", "--tasks", "libero_10:5"]) == 2
    assert "unknown --tasks task 'libero_10:5'; valid choices: libero_object:0, libero_goal:6" in capsys.readouterr().err
