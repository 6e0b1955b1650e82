"""The GPU-scale path, run on CPU with a tiny random Llava checkpoint written by transformers itself."""

import numpy as np
import pytest
import torch

from tgrpo.envs import Observation
from tgrpo.errors import ConfigError, DatasetError
from tgrpo.policy.config import PolicyConfig, TinyVLASize
from tgrpo.policy.registry import build_policy, load_policy
from tgrpo.policy.text import TextTokenizer
from tgrpo.policy.vla import build_llava

SMALL = TinyVLASize.smoke()
INSTR = "put the bowl on the plate"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llava")
    text = TextTokenizer.for_libero(SMALL.text_vocab)
    build_llava(PolicyConfig(name="pretrained-vla", size=SMALL, image_size=64), SMALL.text_vocab + 256, text).save_pretrained(str(path))
    tok = PreTrainedTokenizerFast(tokenizer_object=text.tokenizer, bos_token="<s>", eos_token="</s>",
                                  pad_token="[PAD]", unk_token="[UNK]")
    tok.save_pretrained(str(path))
    return path


def _obs(n):
    rng = np.random.default_rng(0)
    return [Observation(images={"agentview": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)}) for _ in range(n)]


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("bfloat16", 0.1)])
def test_pretrained_directory_serves_the_policy_contract(base_dir, tmp_path, dtype, atol):
    policy = build_policy(PolicyConfig(name="pretrained-vla", pretrained=str(base_dir), dtype=dtype, lora_rank=4,
                                       image_size=128))
    assert policy.config.image_size == 64  # taken from the checkpoint's vision config
    assert next(policy.model.parameters()).dtype == getattr(torch, dtype)
    obs = _obs(3)
    step = policy.act(obs, INSTR, np.arange(3))
    inputs = policy.observation_inputs(obs, INSTR)
    assert policy.encode(inputs) is inputs  # no separable frozen encoder: nothing cached
    logp = policy.token_logprobs(inputs, torch.from_numpy(step.action_tokens))
    torch.testing.assert_close(logp.float(), torch.from_numpy(step.logprobs), atol=atol, rtol=0)
    with torch.no_grad(), policy.reference():
        ref = policy.token_logprobs(inputs, torch.from_numpy(step.action_tokens))
    torch.testing.assert_close(ref.float(), logp.detach().float(), atol=atol, rtol=0)  # adapter is zero at init
    policy.save(tmp_path)
    saved = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(tmp_path / "policy.safetensors")))
    assert saved and all("lora_" in k for k in saved)  # only the adapter, the base stays in the directory
    again = load_policy(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(
            again.token_logprobs(inputs, torch.from_numpy(step.action_tokens)).float(),
            logp.detach().float(), atol=atol, rtol=0)


def test_missing_pretrained_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs policy.pretrained"):
        build_policy(PolicyConfig(name="pretrained-vla"))
    with pytest.raises(DatasetError, match="no config.json"):
        build_policy(PolicyConfig(name="pretrained-vla", pretrained=str(tmp_path)))
    with pytest.raises(ConfigError, match="unknown policy 'openvla-9b'.*tiny-vla, pretrained-vla"):
        build_policy(PolicyConfig(name="openvla-9b"))
