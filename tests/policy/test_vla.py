"""The default VLA: sampling vs teacher-forced log-probs, padding, the LoRA reference, checkpoints."""

import dataclasses

import numpy as np
import pytest
import torch

from tgrpo.envs import Observation
from tgrpo.envs.libero_env import PrivilegedState
from tgrpo.errors import ConfigError, DatasetError
from tgrpo.policy.config import PolicyConfig, TinyVLASize
from tgrpo.policy.normalization import ActionNormalizer
from tgrpo.policy.vla import PolicyInputs, TinyVLA, merge_patches

SMALL = TinyVLASize.smoke()
INSTR = "pick up the alphabet soup and place it in the basket"


@pytest.fixture(scope="module")
def policy():
    """The default architecture (pretrained EfficientNet-Lite0, two cameras, proprio) with a tiny LM."""
    torch.set_num_threads(1)
    return TinyVLA(PolicyConfig(size=SMALL, image_size=64))


def _state(rng) -> PrivilegedState:
    quat = rng.normal(size=4)
    return PrivilegedState(ee_pos=rng.normal(size=3), ee_quat=quat / np.linalg.norm(quat), ee_mat=np.eye(3),
                           gripper_qpos=rng.uniform(-0.04, 0.04, 2), joint_pos=np.zeros(7),
                           object_pos=np.zeros((1, 3)), object_quat=np.zeros((1, 4)), articulation_qpos=np.zeros(0),
                           goal_flags=np.zeros(1, bool), success=np.array(False), sim_state=np.zeros(3))


def _obs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Observation(images={c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                        state=_state(rng)) for _ in range(n)]


def _batch(policy, obs, instructions):
    images = {c: np.stack([o.images[c] for o in obs]) for c in policy.config.cameras}
    proprio = np.stack([o.state.proprio for o in obs]) if policy.config.proprio else None
    return (policy.inputs(images, instructions, proprio),)


def test_default_policy_is_pretrained_efficientnet_with_wrist_camera_and_proprio(policy):
    cfg = policy.config
    assert cfg.vision == "efficientnet-lite0" and cfg.cameras == ("agentview", "wrist") and cfg.proprio
    assert policy.frozen_vision and not any(p.requires_grad for p in policy.core.vision.parameters())
    policy.train()
    assert not policy.core.vision.training  # frozen batch norms stay in inference mode
    ids = policy.prompt_ids([INSTR])[0][0].tolist()
    # 64 px, stride 16 -> 4 x 4 patches, merged 2 x 2 -> 4 tokens per camera, then one proprio token
    assert ids[:10] == [policy.text.bos_id] + [policy.text.image_id] * 8 + [policy.text.proprio_id]
    assert PolicyConfig(name="pretrained-vla").cameras == ("agentview",) and not PolicyConfig(name="pretrained-vla").proprio


def test_pretrained_encoder_weights_come_from_the_wheel():
    from tgrpo.policy.vision import EfficientNetLite0Encoder

    a = EfficientNetLite0Encoder(64, pretrained=True)
    b = EfficientNetLite0Encoder(64, pretrained=False)
    # ImageNet statistics in the batch norms, not the fresh (0, 1) ones
    assert not torch.allclose(a.stem[1].running_var, torch.ones_like(a.stem[1].running_var))
    assert torch.allclose(b.stem[1].running_var, torch.ones_like(b.stem[1].running_var))
    assert a(torch.zeros(2, 3, 64, 64)).shape == (2, 16, 112)


@pytest.mark.parametrize("stride", [16, 32])
def test_frozen_encoder_folds_batch_norms_without_changing_its_function(stride):
    from tgrpo.policy.vision import EfficientNetLite0Encoder

    folded = EfficientNetLite0Encoder(64, stride, frozen=True)
    plain = EfficientNetLite0Encoder(64, stride, frozen=False).eval()  # batch norms applied one by one
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        before = folded(x)
        assert torch.allclose(before, plain(x), rtol=1e-4, atol=1e-4)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.folded_trunk().modules())
        state = folded.state_dict()  # the checkpoint layout keeps the batch norms
        assert "stem.1.running_mean" in state
        state["stem.1.running_mean"] = state["stem.1.running_mean"] + 0.5
        folded.load_state_dict(state)  # new weights: the folded trunk is rebuilt from them
        plain.load_state_dict(state)
        after = folded(x)
        assert not torch.allclose(after, before, atol=1e-3)
        assert torch.allclose(after, plain(x), rtol=1e-4, atol=1e-4)


def test_merge_patches_concatenates_each_block():
    grid = torch.arange(16.0).reshape(1, 16, 1)  # 4 x 4 grid, value = row-major index
    merged = merge_patches(grid, 2)
    assert merged.shape == (1, 4, 4)
    assert merged[0, 0].tolist() == [0, 1, 4, 5] and merged[0, 3].tolist() == [10, 11, 14, 15]


def test_cached_features_give_the_same_logprobs(policy):
    (inputs,) = _batch(policy, _obs(3), [INSTR] * 3)
    bins = torch.randint(0, 256, (3, 7))
    encoded = policy.encode(inputs)
    assert encoded.pixels is None and encoded.features.shape == (6, 16, 112)
    with torch.no_grad():
        torch.testing.assert_close(policy.token_logprobs(encoded, bins), policy.token_logprobs(inputs, bins))
        sub = encoded.select(np.array([2, 0]))
        torch.testing.assert_close(policy.token_logprobs(sub, bins[[2, 0]]),
                                   policy.token_logprobs(inputs.select(np.array([2, 0])), bins[[2, 0]]))


def test_proprio_changes_the_action_distribution_and_is_required(policy):
    obs = _obs(1)
    (inputs,) = _batch(policy, obs, [INSTR])
    other = PolicyInputs(inputs.input_ids, inputs.attention_mask, pixels=inputs.pixels, proprio=inputs.proprio + 1.0)
    bins = torch.zeros(1, 7, dtype=torch.long)
    with torch.no_grad():
        assert (policy.token_logprobs(inputs, bins) - policy.token_logprobs(other, bins)).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="proprioception"):
        policy.inputs({c: obs[0].images[c][None] for c in policy.config.cameras}, [INSTR], None)
    with pytest.raises(ConfigError, match="camera 'wrist'"):
        policy.inputs({"agentview": obs[0].images["agentview"][None]}, [INSTR], obs[0].state.proprio[None])


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
    black, white = _obs(2)
    black.images["agentview"][:] = 0
    white.images["agentview"][:] = 255
    a = policy.token_logprobs(*_batch(policy, [black], [INSTR]), bins)
    b = policy.token_logprobs(*_batch(policy, [white], [INSTR]), bins)
    assert (a - b).abs().max() > 1e-4


def _ascend(opt: torch.optim.Optimizer, logp: torch.Tensor) -> None:
    """One optimizer step raising the mean of ``logp``."""
    loss = -logp.mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


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
        _ascend(opt, policy.token_logprobs(*batch, bins))
    with torch.no_grad():
        tuned = policy.token_logprobs(*batch, bins)
        with policy.reference():
            ref = policy.token_logprobs(*batch, bins)
    assert (tuned - base).abs().max() > 1e-3
    torch.testing.assert_close(ref, base, atol=0, rtol=0)


def _tuned_lora_policy(merge: bool = True) -> TinyVLA:
    """A LoRA policy whose adapter is not zero (a few optimizer steps), with merged sampling on or off."""
    torch.manual_seed(0)
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=64, lora_rank=4, lora_alpha=8, merge_lora_sampling=merge))
    batch = _batch(policy, _obs(2), [INSTR] * 2)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        _ascend(opt, policy.token_logprobs(*batch, torch.randint(0, 256, (2, 7))))
    return policy


def test_merged_lora_sampling_is_the_adapted_policy_and_follows_each_update():
    policy, plain = _tuned_lora_policy(merge=True), _tuned_lora_policy(merge=False)
    assert policy.config.merge_lora_sampling and not plain.config.merge_lora_sampling
    obs = _obs(3, seed=2)
    batch = _batch(policy, obs, [INSTR] * 3)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        merged = policy.act(obs, INSTR, np.arange(3), temperature=0.0)
        unmerged = plain.act(obs, INSTR, np.arange(3), temperature=0.0)
        np.testing.assert_array_equal(merged.action_tokens, unmerged.action_tokens)
        np.testing.assert_allclose(merged.logprobs, unmerged.logprobs, atol=1e-5, rtol=0)
        learner = policy.token_logprobs(*batch, torch.from_numpy(merged.action_tokens))
        torch.testing.assert_close(learner.detach(), torch.from_numpy(merged.logprobs), atol=1e-5, rtol=0)
        # an optimizer step changes the adapter in place: the next sample must see it (no stale merge)
        _ascend(opt, learner)
        plain.load_state_dict(policy.state_dict())
    # sampling leaves the adapted layers as they were: original weights, adapter on and trainable
    for _, layer in policy._lora_layers:
        assert not layer.disable_adapters and layer.base_layer.weight.requires_grad is False
        assert all(p.requires_grad for n, p in layer.named_parameters() if "lora_" in n)
    with torch.no_grad(), policy.reference():
        ref = policy.token_logprobs(*batch, torch.from_numpy(merged.action_tokens))
        sampled_ref = policy.act(obs, INSTR, np.arange(3), temperature=0.0)
        ref_of_sampled = policy.token_logprobs(*batch, torch.from_numpy(sampled_ref.action_tokens))
    assert (ref - learner.detach()).abs().max() > 1e-4  # the adapter matters, so the test can tell them apart
    torch.testing.assert_close(torch.from_numpy(sampled_ref.logprobs), ref_of_sampled, atol=1e-5, rtol=0)


def test_merged_lora_sampling_keeps_bfloat16_weights_in_bfloat16():
    # peft keeps the adapters in float32 under bfloat16 base weights; the merged copy must stay bfloat16,
    # or the layer multiplies bfloat16 inputs by a float32 weight (it raised a dtype error before)
    torch.manual_seed(0)
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=64, lora_rank=4, lora_alpha=8, dtype="bfloat16"))
    for _, layer in policy._lora_layers:
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.05)  # a non-zero adapter
    assert {w.dtype for w in policy.merged_lora_weights().values()} == {torch.bfloat16}
    obs = _obs(2)
    merged = policy.act(obs, INSTR, np.arange(2), temperature=0.0)
    policy.config = dataclasses.replace(policy.config, merge_lora_sampling=False)
    unmerged = policy.act(obs, INSTR, np.arange(2), temperature=0.0)
    assert merged.actions.shape == (2, 7) and np.isfinite(merged.logprobs).all()
    np.testing.assert_allclose(merged.logprobs, unmerged.logprobs, atol=0.1, rtol=0)  # bfloat16 rounding


def test_merged_lora_sampling_defaults_per_family():
    assert PolicyConfig().merge_lora_sampling is True
    assert PolicyConfig(name="pretrained-vla").merge_lora_sampling is False


def test_reference_needs_lora(policy):
    with pytest.raises(ConfigError, match="lora_rank > 0"):
        with policy.reference():
            pass


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    policy = TinyVLA(PolicyConfig(size=SMALL, image_size=64, lora_rank=4),
                     normalizer=ActionNormalizer.fit(rng.normal(size=(20, 7))),
                     proprio_normalizer=ActionNormalizer.fit(rng.normal(size=(20, 8)), gripper_dim=None))
    policy.save(tmp_path)
    loaded = TinyVLA.load(tmp_path)
    batch = _batch(policy, _obs(2), [INSTR] * 2)
    bins = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(policy.token_logprobs(*batch, bins), loaded.token_logprobs(*batch, bins))
    assert loaded.config == policy.config
    np.testing.assert_allclose(loaded.proprio_normalizer.q99, policy.proprio_normalizer.q99)
    np.testing.assert_allclose(loaded.normalizer.q01, policy.normalizer.q01)


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


@pytest.mark.parametrize("kwargs, pattern", [
    ({"vision": "resnet18"}, "policy.vision 'resnet18'.*efficientnet-lite0, siglip"),
    ({"vision_stride": 8}, "vision_stride 8.*16, 32"),
    ({"patch_merge": 0}, "patch_merge must be >= 1"),
    ({"image_size": 100}, "multiple of 32 for efficientnet-lite0"),
    ({"cameras": ("agentview", "top")}, "camera 'top'"),
])
def test_bad_policy_config_values_are_named(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        PolicyConfig(**kwargs)


def test_patch_merge_must_divide_the_feature_grid():
    with pytest.raises(ConfigError, match="patch_merge 3 must divide the 4 x 4 feature grid"):
        TinyVLA(PolicyConfig(size=SMALL, image_size=64, patch_merge=3))


def test_vision_registry_matches_the_config_choices():
    from tgrpo.policy.config import VISION_ENCODERS
    from tgrpo.policy.vision import VISION_ENCODERS as REGISTRY

    assert tuple(REGISTRY) == VISION_ENCODERS
