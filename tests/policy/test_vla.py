"""The default VLA: sampling vs teacher-forced log-probs, padding, the LoRA reference, checkpoints."""

import numpy as np
import pytest
import torch

from tgrpo.envs import Observation
from tgrpo.errors import ConfigError, DatasetError
from tgrpo.policy.config import PolicyConfig, TinyVLASize
from tgrpo.policy.vla import TinyVLA

SMALL = TinyVLASize(vision_width=32, vision_layers=1, vision_heads=2, vision_mlp=64, text_width=32, text_layers=1,
                    text_heads=2, text_mlp=64)
INSTR = "pick up the alphabet soup and place it in the basket"


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(1)
    return TinyVLA(PolicyConfig(size=SMALL, image_size=64))


def _obs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Observation(images={"agentview": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)}) for _ in range(n)]


def _batch(policy, obs, instructions):
    px = policy.pixel_values({"agentview": np.stack([o.images["agentview"] for o in obs])})
    return (px, *policy.prompt_ids(instructions))


def test_sampling_logprobs_equal_teacher_forced_logprobs(policy):
    obs = _obs(4)
    step = policy.act(obs, INSTR, np.arange(4))
    assert step.actions.shape == (4, 7) and step.action_tokens.dtype == np.int64
    assert np.all(np.abs(step.actions[:, 6]) == 1.0)  # gripper binarised for LIBERO
    logp = policy.token_logprobs(*_batch(policy, obs, [INSTR] * 4), torch.from_numpy(step.action_tokens))
    torch.testing.assert_close(logp, torch.from_numpy(step.logprobs), atol=1e-5, rtol=0)
    assert logp.requires_grad


def test_greedy_decoding_is_deterministic(policy):
    obs = _obs(2)
    a = policy.act(obs, INSTR, np.arange(2), temperature=0.0)
    b = policy.act(obs, INSTR, np.arange(2), temperature=0.0)
    np.testing.assert_array_equal(a.action_tokens, b.action_tokens)


def test_left_padding_does_not_change_a_row(policy):
    obs = _obs(2, seed=1)
    bins = torch.randint(0, 256, (2, 7))
    both = policy.token_logprobs(*_batch(policy, obs, [INSTR, "open the drawer"]), bins)
    alone = policy.token_logprobs(*_batch(policy, obs[1:], ["open the drawer"]), bins[1:])
    torch.testing.assert_close(both[1], alone[0], atol=1e-5, rtol=0)


def test_images_change_the_action_distribution(policy):
    bins = torch.zeros(1, 7, dtype=torch.long)
    black = Observation(images={"agentview": np.zeros((64, 64, 3), np.uint8)})
    white = Observation(images={"agentview": np.full((64, 64, 3), 255, np.uint8)})
    a = policy.token_logprobs(*_batch(policy, [black], [INSTR]), bins)
    b = policy.token_logprobs(*_batch(policy, [white], [INSTR]), bins)
    assert (a - b).abs().max() > 1e-4


def test_reference_context_gives_the_base_model_after_training():
    torch.manual_seed(0)
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=64))
    batch = _batch(policy, _obs(2), [INSTR] * 2)
    bins = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        base = policy.token_logprobs(*batch, bins)
    policy.enable_lora(rank=4, alpha=8)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(3):
        loss = -policy.token_logprobs(*batch, bins).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tuned = policy.token_logprobs(*batch, bins)
        with policy.reference():
            ref = policy.token_logprobs(*batch, bins)
    assert (tuned - base).abs().max() > 1e-3
    torch.testing.assert_close(ref, base, atol=0, rtol=0)


def test_reference_needs_lora(policy):
    with pytest.raises(ConfigError, match="lora_rank > 0"):
        with policy.reference():
            pass


def test_save_load_round_trip(tmp_path):
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=64, lora_rank=4))
    policy.save(tmp_path)
    loaded = TinyVLA.load(tmp_path)
    batch = _batch(policy, _obs(2), [INSTR] * 2)
    bins = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(policy.token_logprobs(*batch, bins), loaded.token_logprobs(*batch, bins))
    assert loaded.config == policy.config


def test_loading_a_checkpoint_of_another_model_is_refused(tmp_path):
    TinyVLA(PolicyConfig(size=SMALL, image_size=64)).save(tmp_path)
    import json

    cfg = json.loads((tmp_path / "policy.json").read_text())
    cfg["policy"]["size"]["text_layers"] = 2
    (tmp_path / "policy.json").write_text(json.dumps(cfg))
    with pytest.raises(DatasetError, match="does not match the model"):
        TinyVLA.load(tmp_path)
    with pytest.raises(DatasetError, match="not a tgrpo policy checkpoint"):
        TinyVLA.load(tmp_path / "nowhere")
