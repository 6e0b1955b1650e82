"""The TGRPO learner: updates follow the advantages; config errors; a short real run that resumes."""

import json

import numpy as np
import pytest
import torch

from tgrpo.config import AlgoConfig, TrainConfig, apply_overrides, train_config_from_dict
from tgrpo.errors import ConfigError
from tgrpo.policy.config import PolicyConfig, TinyVLASize
from tgrpo.policy.vla import TinyVLA
from tgrpo.train import StepBatch, update_policy

SMALL = TinyVLASize.smoke()
INSTR = "pick up the alphabet soup and place it in the basket"


def _inputs(policy, images, n, seed=0):
    proprio = np.random.default_rng(seed).normal(size=(n, 8))
    return policy.encode(policy.inputs(images, [INSTR] * n, proprio))


def test_update_raises_good_tokens_and_lowers_bad_ones():
    torch.manual_seed(0)
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=32, lora_rank=4))
    rng = np.random.default_rng(0)
    images = {c: torch.from_numpy(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)) for c in ("agentview", "wrist")}
    tokens = torch.randint(0, 256, (16, 7))
    inputs = _inputs(policy, images, 16)
    with torch.no_grad():
        before = policy.token_logprobs(inputs, tokens)
    adv = torch.tensor([1.0] * 8 + [-1.0] * 8)
    batch = StepBatch(inputs, tokens, before.clone(), adv, torch.full((16,), 1 / (16 * 7)))
    algo = AlgoConfig(epochs=4, minibatch_steps=8, microbatch_steps=4, lr=3e-3, beta=0.0)
    lora_before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    stats = update_policy(policy, torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=algo.lr),
                          batch, algo, rng)
    with torch.no_grad():
        after = policy.token_logprobs(inputs, tokens)
    assert stats.optimizer_steps == 8 and stats.skipped_steps == 0
    assert (after - before)[:8].mean() > 0.05 and (after - before)[8:].mean() < -0.05
    assert any(not torch.equal(p, lora_before[n]) for n, p in policy.named_parameters() if p.requires_grad)
    with torch.no_grad(), policy.reference():  # the base is untouched
        torch.testing.assert_close(policy.token_logprobs(inputs, tokens), before, atol=1e-6, rtol=0)


def test_non_finite_update_is_skipped_and_weights_kept():
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=32, lora_rank=4))
    images = {c: torch.zeros((4, 32, 32, 3), dtype=torch.uint8) for c in ("agentview", "wrist")}
    batch = StepBatch(_inputs(policy, images, 4), torch.zeros((4, 7), dtype=torch.long), torch.zeros(4, 7),
                      torch.tensor([float("nan")] * 4), torch.full((4,), 1 / 28))
    weights = {n: p.detach().clone() for n, p in policy.named_parameters()}
    stats = update_policy(policy, torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad]), batch,
                          AlgoConfig(epochs=1, beta=0.0), np.random.default_rng(0))
    assert stats.skipped_steps == 1 and stats.optimizer_steps == 0
    assert all(torch.equal(p, weights[n]) for n, p in policy.named_parameters())


@pytest.mark.parametrize("overrides, pattern", [
    (["rollout.group_size=1"], "group_size must be >= 2"),
    (["rollout.group_size=-4"], "group_size must be >= 2"),
    (["algo.a1=-0.3"], "a1 and algo.a2 must be >= 0"),
    (["algo.a1=0", "algo.a2=0"], "positive sum"),
    (["algo.advantage=ppo"], "advantage 'ppo'.*tgrpo, grpo, step"),
    (["algo.objective=ppo"], "objective 'ppo'.*clip, dpo"),
    (["algo.objective=dpo", "policy.lora_rank=0"], "objective=dpo .*policy.lora_rank > 0"),
    (["algo.dpo_beta=0"], "dpo_beta must be > 0"),
    (["suite=libero_100"], "libero_100"),
    (["rollout.stop_rule=whenever"], "stop_rule 'whenever'.*first_success, all_done"),
    (["rollout.overlap=yes"], "rollout.overlap must be true or false, got .yes."),
    (["algo.gamma=0.9"], "unknown config key.*algo.gamma.*valid: algo.objective, algo.advantage"),
    (["eval_init_states=[50]"], r"eval_init_states entry 50.*0\.\.49"),
    (["eval_init_states=40-50"], r"eval_init_states entry 50.*0\.\.49"),
    (["rollout.train_init_states=a-b"], "rollout.train_init_states 'a-b' is not a list of indices"),
])
def test_bad_config_values_are_named(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        train_config_from_dict(apply_overrides({}, overrides))


def test_overrides_keep_nested_defaults():
    cfg = train_config_from_dict(apply_overrides({}, ["policy.checkpoint=runs/sft/best", "algo.a1=0.5", "algo.a2=0.5"]))
    assert cfg.policy.lora_rank == 16 and cfg.policy.checkpoint == "runs/sft/best" and cfg.algo.a1 == 0.5
    assert cfg == train_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert TrainConfig().algo.a1 == 0.3 and TrainConfig().rollout.group_size == 4
    ranges = train_config_from_dict(apply_overrides({}, ["eval_init_states=0-2,9", "rollout.train_init_states=7"]))
    assert ranges.eval_init_states == (0, 1, 2, 9) and ranges.rollout.train_init_states == (7,)


@pytest.mark.sim
def test_short_training_run_learns_checkpoints_and_resumes(tmp_path, monkeypatch):
    import tgrpo.train
    from tgrpo.train import train

    sft = tmp_path / "sft"
    TinyVLA(PolicyConfig(size=SMALL, image_size=64)).save(sft)
    base = {"suite": "libero_object", "task": 0, "iterations": 2, "eval_every": 0, "eval_init_states": [49],
            "out": str(tmp_path / "run"),
            "num_threads": 1, "policy": {"checkpoint": str(sft), "lora_rank": 4},
            "rollout": {"group_size": 2, "max_steps": 6}, "algo": {"epochs": 1, "minibatch_steps": 6}}
    cfg = train_config_from_dict(base)
    summary = train(cfg, stop_at=1)
    assert summary["iterations"] == 1
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["iteration"] == 1 and np.isfinite(state["history"][0]["update/loss"])
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tgrpo.train, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)  # resumes at iteration 1, trains iteration 2, is stopped during the final evaluation
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["iteration"] == 2 and state["evals"] == []  # iteration 2 was saved before its evaluation
    monkeypatch.undo()  # the real evaluate again
    summary = train(cfg)  # only the evaluation is left to run
    assert summary["iterations"] == 2
    hist = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())["history"]
    assert [h["iteration"] for h in hist] == [1, 2] and hist[1]["rollout/length"] == 6
    assert (tmp_path / "run" / "keyposes.json").exists()
    assert [e["iteration"] for e in summary["evals"]] == [2] and summary["evals"][0]["episodes"] == 1  # at the end only


def test_group_metrics_report_whether_the_success_has_the_best_return():
    from types import SimpleNamespace

    from tgrpo.algo.advantages import tgrpo_advantages
    from tgrpo.train import group_metrics, group_returns

    r = np.array([[0.5, 0.5, 1.0], [0.5, 0.5, 0.5], [0.0, 0.25, 0.25]], dtype=np.float32)
    mask = torch.ones(3, 3, dtype=torch.bool)
    rollout = SimpleNamespace(mask=mask, success=torch.tensor([True, False, False]), lengths=torch.tensor([3, 3, 3]))
    rewards = SimpleNamespace(rewards=r, f1=r, f2=np.zeros_like(r), stage=(r * 4).astype(int))
    adv = tgrpo_advantages(torch.from_numpy(r), mask)
    m = group_metrics(rollout, rewards, adv, group_returns(rollout, rewards))
    assert m["reward/success_is_best"] == 1.0 and m["adv/success_mean"] > 0
    assert m["reward/return_mean"] == pytest.approx(4.0 / 3)
    rollout.success = torch.tensor([False, False, True])  # a success with the lowest return: the reward misranks it
    m = group_metrics(rollout, rewards, adv, group_returns(rollout, rewards))
    assert m["reward/success_is_best"] == 0.0 and m["adv/success_mean"] < 0
    rollout.success = torch.zeros(3, dtype=torch.bool)
    assert "reward/success_is_best" not in group_metrics(rollout, rewards, adv, group_returns(rollout, rewards))


def _two_trajectories(policy, steps=6):
    rng = np.random.default_rng(1)
    n = 2 * steps
    images = {c: torch.from_numpy(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)) for c in ("agentview", "wrist")}
    tokens = torch.randint(0, 256, (n, 7), generator=torch.Generator().manual_seed(1))
    traj = torch.tensor([0] * steps + [1] * steps)
    return StepBatch(_inputs(policy, images, n), tokens, torch.zeros(n, 7), torch.zeros(n), torch.full((n,), 1 / n),
                     traj=traj, returns=torch.tensor([0.0, 2.0]))  # trajectory 1 is preferred


def test_dpo_update_has_the_full_graph_gradient_and_prefers_the_better_trajectory():
    from tgrpo.algo.loss import dpo_loss
    from tgrpo.train import update_dpo

    torch.manual_seed(0)
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=32, lora_rank=4))
    batch = _two_trajectories(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    with torch.no_grad(), policy.reference():
        ref = policy.token_logprobs(batch.inputs, batch.tokens)
    sign = torch.where(batch.traj == 1, 1.0, -1.0)
    # readable version: the whole pair in one graph
    margin = (sign[:, None] * (policy.token_logprobs(batch.inputs, batch.tokens) - ref)).sum()
    full = torch.autograd.grad(dpo_loss(margin, 0.1), params)
    # update_dpo's micro-batched gradient (lr 0 keeps the weights, the gradient stays in .grad)
    algo = AlgoConfig(objective="dpo", epochs=1, microbatch_steps=4, lr=1e-9, grad_clip=1e9)
    opt = torch.optim.SGD(params, lr=0.0)
    stats = update_dpo(policy, opt, batch, algo, np.random.default_rng(0))
    assert stats.optimizer_steps == 1
    for g, p in zip(full, params):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-4)
    # training moves probability from the rejected trajectory to the chosen one, against the reference
    opt = torch.optim.AdamW(params, lr=3e-3)
    stats = update_dpo(policy, opt, batch, AlgoConfig(objective="dpo", epochs=6, microbatch_steps=4), np.random.default_rng(0))
    with torch.no_grad():
        after = (sign[:, None] * (policy.token_logprobs(batch.inputs, batch.tokens) - ref)).sum()
    assert stats.optimizer_steps == 6 and after > 1.0 and stats.preference_margin > 0
    # equal returns: nothing to prefer, no step
    tied = StepBatch(batch.inputs, batch.tokens, batch.old_logp, batch.adv, batch.weights, batch.traj, torch.ones(2))
    assert update_dpo(policy, opt, tied, algo, np.random.default_rng(0)).optimizer_steps == 0


def test_objective_registry_matches_the_config_choices():
    from tgrpo.config import OBJECTIVES as CONFIG_OBJECTIVES
    from tgrpo.train import OBJECTIVES, get_objective

    assert tuple(OBJECTIVES) == CONFIG_OBJECTIVES
    with pytest.raises(ConfigError, match="objective 'ppo'.*clip, dpo"):
        get_objective("ppo")


@pytest.mark.sim
def test_dead_worker_is_replaced_and_group_resampled_then_repeated_failures_stop(tmp_path, tiny_sft, monkeypatch):
    import os
    import signal

    import tgrpo.train
    from tgrpo.errors import TgrpoError
    from tgrpo.train import train

    cfg = train_config_from_dict({
        "suite": "libero_object", "task": 0, "iterations": 2, "eval_every": 0, "eval_init_states": [49],
        "out": str(tmp_path / "run"), "num_threads": 1, "probe_demos": 0,
        "policy": {"checkpoint": str(tiny_sft), "lora_rank": 4},
        "rollout": {"group_size": 2, "max_steps": 6, "max_retries": 1}, "algo": {"epochs": 1}})
    real, calls = tgrpo.train.rollout_groups, []

    def killing(always):
        def rollout(pool, policy, **kwargs):
            calls.append(len(calls))
            if always or len(calls) == 1:  # SIGKILL env 1 after step 2 of the rollout
                kwargs["on_step"] = lambda t, live: t == 2 and os.kill(pool.pids[1], signal.SIGKILL)
            return real(pool, policy, **kwargs)
        return rollout

    monkeypatch.setattr(tgrpo.train, "rollout_groups", killing(always=False))
    summary = train(cfg, stop_at=1)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert len(calls) == 2 and summary["rollout_retries"] == 1
    assert state["history"][0]["faults/rollout_retries"] == 1 and state["history"][0]["rollout/length"] == 6
    monkeypatch.setattr(tgrpo.train, "rollout_groups", killing(always=True))
    with pytest.raises(TgrpoError, match=r"(?s)rollout failed 2 times in a row.*worker 1 failed during 'step'"):
        train(cfg)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["iteration"] == 1  # what was learned before is kept
