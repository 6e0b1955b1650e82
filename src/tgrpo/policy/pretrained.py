"""The GPU-scale path: a pretrained Llava-style VLA from a local transformers checkpoint directory.

``PolicyConfig(name="pretrained-vla", pretrained=DIR, dtype="bfloat16", device="cuda", lora_rank=32)``
loads ``DIR`` with ``AutoModelForImageTextToText.from_pretrained`` (``trust_remote_code`` when the config
says so) and its tokenizer with ``AutoTokenizer``, and serves the same contract as the CPU default:
batched KV-cached sampling restricted to the action tokens (the last 256 ids of the tokenizer's base
vocabulary, as OpenVLA), teacher-forced log-probs, the LoRA reference context. Checkpoints written by
``save`` hold the trained weights only (the LoRA adapter when LoRA is on) and point at ``DIR`` for the base.
Nothing is downloaded: ``DIR`` must be on disk.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tgrpo.errors import ConfigError, DatasetError
from tgrpo.policy.config import PolicyConfig
from tgrpo.policy.normalization import STATS_FILE, ActionNormalizer
from tgrpo.policy.text import PROMPT
from tgrpo.policy.vla import ACTION_DIM, WEIGHTS_FILE, LlavaVLA, _read_config


class PromptEncoder:
    """``<s> <image>*P prompt`` over a transformers tokenizer (OpenVLA's prompt)."""

    def __init__(self, tokenizer, image_token_id: int):
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.bos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.image_id = image_token_id

    def encode_prompt(self, instruction: str, num_image_tokens: int, proprio: bool = False) -> list[int]:
        """``proprio`` is always False here: ``PretrainedVLA`` refuses a config with proprioception."""
        prompt = PROMPT.format(instruction=instruction.lower().strip().rstrip("."))
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return [self.bos_id] + [self.image_id] * num_image_tokens + list(ids)


def _pixel_stats(directory: Path) -> tuple[list[float], list[float]]:
    path = directory / "preprocessor_config.json"
    if path.exists():
        cfg = json.loads(path.read_text())
        if "image_mean" in cfg and "image_std" in cfg:
            return list(cfg["image_mean"])[:3], list(cfg["image_std"])[:3]
    return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


class PretrainedVLA(LlavaVLA):
    """A pretrained Llava-style VLA loaded from ``config.pretrained`` (see the module docstring)."""

    def __init__(self, config: PolicyConfig, normalizer: ActionNormalizer | None = None):
        from transformers import AutoModelForImageTextToText, AutoTokenizer

        if not config.pretrained:
            raise ConfigError("policy 'pretrained-vla' needs policy.pretrained = a local checkpoint directory")
        if config.proprio:
            raise ConfigError("pretrained-vla takes no proprioception: set policy.proprio = false")
        base = Path(config.pretrained)
        if not (base / "config.json").exists():
            raise DatasetError(f"{base} is not a transformers checkpoint directory (no config.json)")
        model = AutoModelForImageTextToText.from_pretrained(str(base), dtype=config.dtype,
                                                            trust_remote_code=config.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(base), trust_remote_code=config.trust_remote_code)
        mc = model.config
        image_token = getattr(mc, "image_token_index", None) or getattr(mc, "image_token_id", None)
        vision = mc.vision_config
        patches = getattr(mc, "image_seq_length", None) or (vision.image_size // vision.patch_size) ** 2
        if config.image_size != vision.image_size:
            config = dataclasses.replace(config, image_size=vision.image_size)
        if normalizer is None:
            normalizer = ActionNormalizer.load(base) if (base / STATS_FILE).exists() else ActionNormalizer.identity(ACTION_DIM)
        mean, std = _pixel_stats(base)
        super().__init__(model, PromptEncoder(tokenizer, image_token), normalizer, config,
                         action_vocab_end=tokenizer.vocab_size, image_tokens_per_camera=patches,
                         pixel_mean=mean, pixel_std=std)

    def trainable_state(self):
        """Only the trained weights: the LoRA adapter when LoRA is on (the base stays in ``pretrained``)."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in super().trainable_state().items() if not self.lora_enabled or k in names}

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self._write_common(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, **overrides: object) -> "PretrainedVLA":
        from safetensors.torch import load_file

        directory = Path(directory)
        policy = cls(_read_config(directory, overrides), ActionNormalizer.load(directory))
        policy._load_state(load_file(str(directory / WEIGHTS_FILE)), directory / WEIGHTS_FILE,
                           strict=not policy.lora_enabled)
        return policy
