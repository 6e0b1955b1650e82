"""The main job: config errors, and a miniature end-to-end run (demos -> SFT -> TGRPO -> report) that resumes."""

import json

import pytest

from tgrpo.errors import ConfigError
from tgrpo.pipeline import PipelineConfig


@pytest.mark.parametrize("kwargs, pattern", [
    ({"num_demos": 0}, "num_demos must be >= 1, got 0"),
    ({"eval_every": 0}, "eval_every must be >= 1 or None"),
    ({"eval_init_states": ()}, "eval_init_states is empty"),
])
def test_bad_pipeline_config_is_named(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        PipelineConfig(**kwargs)


@pytest.mark.sim
def test_miniature_pipeline_writes_report_and_skips_done_stages(tmp_path):
    from tgrpo.pipeline import run_pipeline

    cfg = PipelineConfig(out=str(tmp_path / "p"), num_demos=2, sft_steps=3, iterations=1, eval_init_states=(49,),
                         train_overrides=("rollout.group_size=2", "rollout.max_steps=8", "algo.epochs=1",
                                          "num_threads=1"))
    result = run_pipeline(cfg)
    out = tmp_path / "p"
    assert [e["iteration"] for e in (result["before"], result["after"])] == [0, 1]
    assert result["before"]["episodes"] == result["after"]["episodes"] == 1
    report = (out / "report.md").read_text()
    assert "| SFT (2 demos, 3 steps) | " in report and "| TGRPO (1 iterations) | " in report
    assert (out / "learning_curve.png").stat().st_size > 1000
    cfg_used = json.loads((out / "tgrpo" / "train_config.json").read_text())
    assert cfg_used["rollout"]["max_steps"] == 8 and cfg_used["eval_every"] == 1
    state = json.loads((out / "tgrpo" / "checkpoint" / "trainer_state.json").read_text())
    assert set(state["probe_start"]) == {"probe/nll", "probe/entropy"}  # scored on the collected demos
    assert 0 < state["history"][0]["probe/nll"] < 10 and 0 < state["history"][0]["probe/entropy"] < 5.6
    # a second run finds every stage done: the demos and SFT are kept, TGRPO resumes at its last iteration
    sft_mtime = (out / "sft" / "sft_summary.json").stat().st_mtime
    again = run_pipeline(cfg)
    assert again["timings"]["demos_s"] < 5 and (out / "sft" / "sft_summary.json").stat().st_mtime == sft_mtime
    assert again["after"] == result["after"]
