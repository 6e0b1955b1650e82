import json

import pytest

from tgrpo.errors import ConfigError
from tgrpo.cli import main
from tgrpo.evaluation import (EvalConfig, evaluate, markdown_table, mcnemar_exact_p, paired_comparison,
                             read_episodes, summarize, wilson_interval)


def test_wilson_interval_hand_computed():
    lo, hi = wilson_interval(5, 10)  # p = 0.5, n = 10: 0.5 +- 1.96 * sqrt(0.025 + 0.0096) / 1.384
    assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summary_and_table():
    eps = [{"task": 0, "init_state": i, "success": i < 3, "steps": 100 + i} for i in range(4)]
    s = summarize(eps, "libero_object")
    assert s["successes"] == 3 and s["tasks"][0]["mean_steps_success"] == 101.0
    assert "| 0 | pick_up_the_alphabet_soup_and_place_it_in_the_basket | 3/4 | 75.0% |" in markdown_table(s)


def test_mcnemar_exact_hand_computed():
    # 7 vs 3 discordant: 2 * (C(10,0) + C(10,1) + C(10,2) + C(10,3)) / 2^10 = 2 * 176 / 1024
    assert mcnemar_exact_p(7, 3) == pytest.approx(0.34375)
    assert mcnemar_exact_p(3, 7) == pytest.approx(0.34375)
    assert mcnemar_exact_p(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact_p(2, 3) == 1.0 and mcnemar_exact_p(0, 0) == 1.0


def _write_eval(d, outcomes):
    d.mkdir()
    (d / "episodes.jsonl").write_text("".join(
        json.dumps({"task": 0, "init_state": i, "success": s, "steps": 100}) + "\n" for i, s in outcomes.items()))
    return d


def test_paired_comparison_counts_and_cli(tmp_path, capsys):
    a = _write_eval(tmp_path / "a", {0: True, 1: True, 2: False, 3: False, 4: True})
    b = _write_eval(tmp_path / "b", {0: True, 1: False, 2: True, 3: True, 5: True})  # 5 is not in a
    c = paired_comparison(read_episodes(a), read_episodes(b))
    assert (c.episodes, c.a_successes, c.b_successes, c.both, c.only_a, c.only_b) == (4, 2, 3, 1, 1, 2)
    assert c.only_a_states == ((0, 1),) and c.only_b_states == ((0, 2), (0, 3))
    assert c.p_value == 1.0
    assert main(["compare", str(a), str(b)]) == 0
    assert "| 4 | 3/4 (baseline 2) |" in capsys.readouterr().out
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "no evaluation episodes" in capsys.readouterr().err
    _write_eval(tmp_path / "other_states", {7: True})
    with pytest.raises(ConfigError, match="share no"):
        paired_comparison(read_episodes(a), read_episodes(tmp_path / "other_states"))
    # A+B joins evaluations of disjoint states; an episode with two different outcomes is refused
    joined = read_episodes(f"{a}+{tmp_path / 'other_states'}")
    assert joined == {**read_episodes(a), (0, 7): True}
    _write_eval(tmp_path / "clash", {0: False})
    with pytest.raises(ConfigError, match="task 0 init state 0 succeeds in one of"):
        read_episodes(f"{a}+{tmp_path / 'clash'}")


def test_bad_eval_config():
    with pytest.raises(ConfigError, match=r"init-state index 50.*0\.\.49"):
        EvalConfig(init_states=(50,))
    with pytest.raises(ConfigError, match="num_envs"):
        EvalConfig(num_envs=0)


@pytest.mark.sim
def test_eval_runs_writes_results_and_resumes(tmp_path):
    from tgrpo.policy.config import PolicyConfig, TinyVLASize
    from tgrpo.policy.vla import TinyVLA

    size = TinyVLASize.smoke()
    policy = TinyVLA(PolicyConfig(size=size, image_size=64))
    cfg = EvalConfig(suite="libero_object", tasks=(0,), init_states=(0, 1, 2), num_envs=2, max_steps=4, videos=1,
                     out=str(tmp_path))
    s = evaluate(policy, cfg)
    assert s["episodes"] == 3 and s["successes"] == 0  # an untrained policy does not solve it in 4 steps
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["init_state"] for line in lines) == [0, 1, 2]
    assert all(json.loads(line)["steps"] == 4 for line in lines)
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["tasks"]["0"]["episodes"] == 3
    evaluate(policy, cfg)  # resume: nothing left to run, nothing appended
    assert (tmp_path / "episodes.jsonl").read_text().splitlines() == lines


@pytest.mark.sim
def test_eval_replaces_a_killed_worker_and_reruns_its_episodes(tmp_path, monkeypatch):
    import os
    import signal

    import tgrpo.evaluation
    from tgrpo.policy.config import PolicyConfig, TinyVLASize
    from tgrpo.policy.vla import TinyVLA

    policy = TinyVLA(PolicyConfig(size=TinyVLASize.smoke(), image_size=64))
    real, calls = tgrpo.evaluation.rollout_group, []

    def killing_once(pool, actor, **kwargs):
        calls.append(kwargs["init_state"])
        if len(calls) == 1:  # SIGKILL env 1 after step 1 of the first chunk
            kwargs["on_step"] = lambda t, live: t == 1 and os.kill(pool.pids[1], signal.SIGKILL)
        return real(pool, actor, **kwargs)

    monkeypatch.setattr(tgrpo.evaluation, "rollout_group", killing_once)
    cfg = EvalConfig(suite="libero_object", tasks=(0,), init_states=(0, 1, 2), num_envs=2, max_steps=4, videos=0,
                     out=str(tmp_path))
    s = evaluate(policy, cfg)
    assert s["episodes"] == 3 and calls == [[0, 1], [0, 1], [2, 2]]  # the killed chunk ran again, whole
    lines = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert sorted(e["init_state"] for e in lines) == [0, 1, 2] and all(e["steps"] == 4 for e in lines)


@pytest.mark.parametrize("argv, pattern", [
    (["--suite", "libero_foo"], "unknown LIBERO suite 'libero_foo'; valid choices: all, libero_spatial"),
    (["--suite", "all", "--tasks", "0,pick_up_the_alphabet_soup_and_place_it_in_the_basket"],
     "--tasks pick_up_the_alphabet_soup_and_place_it_in_the_basket: with several suites give task indices"),
    (["--suite", "libero_object", "libero_goal", "--tasks", "0-10"], r"task index for libero_object 10.*0\.\.9"),
    (["--suite", "libero_object", "--tasks", "soup"], "unknown task 'soup' in libero_object; valid names: 0="),
])
def test_eval_cli_refuses_bad_suites(tmp_path, capsys, argv, pattern):
    import re

    assert main(["eval", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "e"), *argv]) == 2
    assert re.search(pattern, capsys.readouterr().err)
    assert not (tmp_path / "e").exists()


@pytest.mark.sim
def test_eval_cli_on_several_suites_writes_the_paper_table(tmp_path, tiny_sft, capsys):
    out = tmp_path / "e"
    argv = ["eval", "--checkpoint", str(tiny_sft), "--suite", "libero_object", "libero_10", "--tasks", "1",
            "--init-states", "3", "--max-steps", "2", "--num-envs", "1", "--out", str(out)]
    assert main(argv) == 0
    table = (out / "results.md").read_text().splitlines()
    assert table[0] == "| method | Spatial | Object | Goal | Long | Average |"
    assert table[2] == f"| {tiny_sft} | - | 0.0 | - | 0.0 | 0.0 |"
    for suite in ("libero_object", "libero_10"):  # task 1, init state 3 of each suite, 2 steps
        (episode,) = [json.loads(line) for line in (out / suite / "episodes.jsonl").read_text().splitlines()]
        assert (episode["task"], episode["init_state"], episode["steps"]) == (1, 3, 2)
