"""Behaviour cloning on a small synthetic LIBERO-format dataset: the loss falls, runs resume exactly."""

import json

import numpy as np
import pytest
import torch

from tgrpo.data import Demo, DemoWriter
from tgrpo.envs import TaskInfo
from tgrpo.errors import ConfigError, DatasetError
from tgrpo.policy.config import PolicyConfig, TinyVLASize
from tgrpo.sft import SFTConfig, train_sft

SMALL = TinyVLASize(vision_width=32, vision_layers=1, vision_heads=2, vision_mlp=64, text_width=64, text_layers=2,
                    text_heads=2, text_mlp=128)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    """Two image patterns, each always followed by its own action: learnable from the image alone."""
    root = tmp_path_factory.mktemp("demos")
    bddl = root / "t.bddl"
    bddl.write_text("")
    task = TaskInfo("libero_object", 0, "pick_up_x", "pick up the alphabet soup", str(bddl))
    rng = np.random.default_rng(0)
    path = root / "x_demo.hdf5"
    with DemoWriter(path, task) as w:
        for _ in range(6):
            kind = rng.integers(0, 2, size=20)
            img = np.where(kind[:, None, None, None] == 1, 230, 20).astype(np.uint8) * np.ones((1, 32, 32, 3), np.uint8)
            act = np.where(kind[:, None] == 1, [[0.5, -0.2, 0.1, 0, 0, 0, 1.0]], [[-0.5, 0.3, -0.1, 0, 0, 0, -1.0]])
            act = act + rng.normal(0, 0.01, act.shape) * [1, 1, 1, 0, 0, 0, 0]
            n = len(act)
            w.add(Demo(actions=act.astype(np.float32), obs={
                "agentview_rgb": img, "eye_in_hand_rgb": img, "ee_pos": np.zeros((n, 3)), "ee_ori": np.zeros((n, 3)),
                "gripper_states": np.zeros((n, 2)), "joint_states": np.zeros((n, 7))}, states=np.zeros((n, 4))))
    return path


def _cfg(demo_file, out, steps, vision="efficientnet-lite0"):
    return SFTConfig(data=(str(demo_file),), out=str(out), steps=steps, batch_size=16, lr=2e-3, warmup_steps=5,
                     eval_every=10, save_every=10, augment_shift=0 if vision != "siglip" else 2, num_threads=1,
                     policy=PolicyConfig(size=SMALL, image_size=32, vision=vision))


# cached features of the frozen pretrained encoder (cheap steps, more of them) / a ViT trained from scratch
@pytest.mark.parametrize("vision, steps", [("efficientnet-lite0", 240), ("siglip", 200)])
def test_sft_loss_falls_and_checkpoints_load(demo_file, tmp_path, vision, steps):
    summary = train_sft(_cfg(demo_file, tmp_path, steps, vision))
    assert summary["train_rows"] == 100 and summary["val_rows"] == 20
    assert summary["machine"]["threads"] == torch.get_num_threads() and summary["machine"]["cpu"]
    first = None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)
    assert summary["final"]["val/token_acc"] > 0.5 and summary["final"]["val/l1"] < 0.1
    from tgrpo.policy.vla import TinyVLA

    loaded = TinyVLA.load(tmp_path / "checkpoint")
    assert loaded.normalizer.mask.tolist() == [True] * 6 + [False]
    stats = json.loads((tmp_path / "checkpoint" / "dataset_statistics.json").read_text())
    assert stats["action"]["mask"][6] is False
    assert len(stats["proprio"]["q01"]) == 8 and loaded.config.vision == vision


def test_resumed_run_matches_uninterrupted_run(demo_file, tmp_path):
    full = tmp_path / "full"
    train_sft(_cfg(demo_file, full, 20))
    part = tmp_path / "part"
    train_sft(_cfg(demo_file, part, 20), stop_at=13)  # interrupted after step 13
    train_sft(_cfg(demo_file, part, 20))  # resumes at step 13
    from safetensors.torch import load_file

    a = load_file(str(full / "checkpoint" / "policy.safetensors"))
    b = load_file(str(part / "checkpoint" / "policy.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)


def test_training_again_gives_the_same_fingerprint(demo_file, tmp_path):
    """What an experiment ledger relies on to pair a retrained SFT model with the cells recorded from it."""
    import dataclasses

    from tgrpo.checkpoint import fingerprint

    runs = {"a": _cfg(demo_file, tmp_path / "a", 12), "b": _cfg(demo_file, tmp_path / "b", 12)}
    runs["seed1"] = dataclasses.replace(_cfg(demo_file, tmp_path / "seed1", 12), seed=1)
    for cfg in runs.values():
        train_sft(cfg)
    prints = {name: fingerprint(tmp_path / name / "checkpoint") for name in runs}
    assert prints["a"] == prints["b"] != prints["seed1"]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="at least one demo"):
        SFTConfig()
    with pytest.raises(DatasetError, match="nowhere.hdf5 does not exist"):
        train_sft(SFTConfig(data=(str(tmp_path / "nowhere.hdf5"),), out=str(tmp_path)))
    with pytest.raises(DatasetError, match="contains no \\*.hdf5"):
        train_sft(SFTConfig(data=(str(tmp_path),), out=str(tmp_path / "o")))


def test_fine_tuning_a_checkpoint_reads_the_checkpoints_cameras(demo_file, tmp_path):
    """The initial checkpoint's config (both cameras) wins over the run's policy config (agentview only)."""
    from dataclasses import replace

    train_sft(_cfg(demo_file, tmp_path / "base", 2))
    cfg = _cfg(demo_file, tmp_path / "ft", 2)
    cfg = replace(cfg, policy=replace(cfg.policy, cameras=("agentview",), checkpoint=str(tmp_path / "base" / "checkpoint")))
    summary = train_sft(cfg)
    assert summary["train_rows"] == 100
    from tgrpo.policy.vla import TinyVLA

    assert TinyVLA.load(tmp_path / "ft" / "checkpoint").config.cameras == ("agentview", "wrist")


def test_training_probe_scores_the_first_demos_and_tracks_the_policy(demo_file):
    """tgrpo train's probe: the first ``probe_demos`` demos of the task, scored as SFT validation is."""
    from tgrpo.config import TrainConfig
    from tgrpo.policy.vla import TinyVLA
    from tgrpo.sft import batch_inputs, evaluate_rows
    from tgrpo.train import demo_probe, probe_metrics

    torch.manual_seed(0)
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=32))
    task = TaskInfo("libero_object", 0, "pick_up_x", "pick up the alphabet soup", "t.bddl")
    assert demo_probe(TrainConfig(demos=str(demo_file), probe_demos=0), task, policy) is None
    assert demo_probe(TrainConfig(demos=None), task, policy) is None
    probe = demo_probe(TrainConfig(demos=str(demo_file), probe_demos=2), task, policy)
    assert len(probe) == 40 and probe.features is not None  # 2 demos x 20 steps, encoded once
    before = probe_metrics(policy, probe)
    assert set(before) == {"probe/nll", "probe/entropy"}
    assert 0 < before["probe/entropy"] <= np.log(256) + 1e-4  # nats over 256 bins
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(20):  # behaviour-clone the probe rows: their NLL must fall
        inputs, bins = batch_inputs(policy, probe, np.arange(len(probe)))
        loss = -policy.token_logprobs(inputs, bins, temperature=1.0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = probe_metrics(policy, probe)
    assert after["probe/nll"] < before["probe/nll"] - 0.5, (before, after)
    same = evaluate_rows(policy, probe)  # the probe is teacher-forced NLL and entropy as SFT's validation
    assert abs(same["val/nll"] - after["probe/nll"]) < 1e-4 and abs(same["val/entropy"] - after["probe/entropy"]) < 1e-4
