"""The default VLA: an OpenVLA-shaped model built from stock transformers classes, small enough for CPU.

``LlavaForConditionalGeneration`` with a SigLIP vision tower, Llava's linear-GELU-linear projector and a
Llama causal LM. The prompt is ``<s> <image>*P In: What action should the robot take to {instruction}?
Out:`` (image tokens after BOS, as OpenVLA), followed by 7 action tokens decoded autoregressively with a KV
cache. Action tokens are the last 256 ids of the vocabulary (OpenVLA's tokenizer); the action head is
restricted to them, both when sampling and when scoring, so sampling log-probs and teacher-forced
log-probs are the same distribution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tgrpo.envs.libero_env import Observation
from tgrpo.errors import ConfigError, DatasetError
from tgrpo.policy.action_tokenizer import NUM_BINS, ActionTokenizer
from tgrpo.policy.config import PolicyConfig
from tgrpo.policy.normalization import ActionNormalizer
from tgrpo.policy.text import TextTokenizer
from tgrpo.rollout.types import PolicyStep

ACTION_DIM = 7
WEIGHTS_FILE = "policy.safetensors"
CONFIG_FILE = "policy.json"


def build_llava(config: PolicyConfig, vocab_size: int, special: TextTokenizer) -> nn.Module:
    """A randomly initialised Llava VLA of ``config.size`` (no download: all from config classes)."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    s = config.size
    patches = (config.image_size // s.patch_size) ** 2
    vision = SiglipVisionConfig(hidden_size=s.vision_width, intermediate_size=s.vision_mlp,
                                num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
                                image_size=config.image_size, patch_size=s.patch_size, vision_use_head=False)
    text = LlamaConfig(hidden_size=s.text_width, intermediate_size=s.text_mlp, num_hidden_layers=s.text_layers,
                       num_attention_heads=s.text_heads, num_key_value_heads=s.text_heads, vocab_size=vocab_size,
                       max_position_embeddings=max(512, 2 * patches * len(config.cameras)),
                       pad_token_id=special.pad_id, bos_token_id=special.bos_id, eos_token_id=special.eos_id)
    llava = LlavaConfig(vision_config=vision, text_config=text, image_token_index=special.image_id,
                        image_seq_length=patches, vision_feature_select_strategy="full", vision_feature_layer=-1,
                        projector_hidden_act="gelu")
    torch.manual_seed(config.seed)
    return LlavaForConditionalGeneration(llava)


class LlavaVLA(nn.Module):
    """The policy contract on any Llava-style vision-language model (image tokens spliced into the prompt).

    Rollouts call :meth:`act`; the learner calls :meth:`token_logprobs` on inputs from
    :meth:`pixel_values` and :meth:`prompt_ids`; :meth:`reference` gives the frozen base policy (LoRA
    adapter disabled) for the KL term. Subclasses only build the model and write/read checkpoints.

    Args:
        model: the transformers model (forward takes input_ids, pixel_values, attention_mask,
            position_ids, past_key_values, use_cache, logits_to_keep).
        text: prompt encoder (``encode_prompt``, ``pad_id``).
        normalizer: action statistics.
        config: the policy config.
        action_vocab_end: the action tokens are ids ``[end - 256, end)`` (OpenVLA: the tokenizer's 32000).
        image_tokens_per_camera: patches per image.
        pixel_mean, pixel_std: per-channel image normalisation of the vision tower (SigLIP: 0.5, 0.5).
    """

    def __init__(self, model: nn.Module, text, normalizer: ActionNormalizer, config: PolicyConfig,
                 action_vocab_end: int, image_tokens_per_camera: int,
                 pixel_mean: Sequence[float] = (0.5, 0.5, 0.5), pixel_std: Sequence[float] = (0.5, 0.5, 0.5)):
        super().__init__()
        self.config = config
        self.text = text
        self.normalizer = normalizer
        self.vocab_size = action_vocab_end
        self.action_tokenizer = ActionTokenizer()
        self.num_image_tokens = image_tokens_per_camera * len(config.cameras)
        self.model = model.to(device=config.device, dtype=getattr(torch, config.dtype))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.lora_enabled = False
        if config.lora_rank > 0:
            self.enable_lora(config.lora_rank, config.lora_alpha)
        self.generator = torch.Generator(device=config.device).manual_seed(config.seed)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # -- LoRA and the reference policy ---------------------------------------------------------------

    def enable_lora(self, rank: int, alpha: int) -> None:
        """Wrap the model with LoRA adapters on every linear layer (OpenVLA's recipe); freezes the base."""
        from peft import LoraConfig, get_peft_model

        if self.lora_enabled:
            return
        cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear",
                         init_lora_weights="gaussian")
        self.model = get_peft_model(self.model, cfg)
        self.lora_enabled = True
        self.config = dataclasses.replace(self.config, lora_rank=rank, lora_alpha=alpha)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Inside this context the policy is the frozen base model (adapter off): pi_ref for the KL term."""
        if not self.lora_enabled:
            raise ConfigError("the reference policy needs LoRA (policy.lora_rank > 0): with full fine-tuning "
                              "there is no frozen base inside the same module")
        with self.model.disable_adapter():
            yield

    # -- inputs --------------------------------------------------------------------------------------

    def pixel_values(self, images: dict[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """camera -> (B, H, W, 3) uint8 LIBERO images -> (B * C, 3, S, S) float in [-1, 1].

        Images are rotated 180 degrees (LIBERO renders them upside down; OpenVLA's LIBERO script does the
        same), resized to ``image_size`` if needed and scaled as SigLIP expects (mean 0.5, std 0.5).
        """
        per_cam = []
        for cam in self.config.cameras:
            if cam not in images:
                raise ConfigError(f"the policy needs camera {cam!r} but the observation has {sorted(images)}")
            x = torch.as_tensor(np.asarray(images[cam]))
            x = x.flip(1, 2).permute(0, 3, 1, 2).float().contiguous()
            if x.shape[-1] != self.config.image_size:
                x = F.interpolate(x, size=self.config.image_size, mode="bilinear", antialias=True, align_corners=False)
            per_cam.append(x.to(self.device))
        x = torch.stack(per_cam, 1).flatten(0, 1)  # sample-major: (B, C, ...) -> (B * C, ...)
        return ((x / 255.0 - self.pixel_mean) / self.pixel_std).to(getattr(torch, self.config.dtype))

    def prompt_ids(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and attention mask, both (B, L)."""
        rows = [self.text.encode_prompt(t, self.num_image_tokens) for t in instructions]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.text.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    def action_ids(self, bins: torch.Tensor) -> torch.Tensor:
        return self.vocab_size - 1 - bins

    # -- forward passes ------------------------------------------------------------------------------

    def _action_logits(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Full-vocab logits (..., V) -> (..., 256) over bins 0..255 (bin b is id V-1-b), divided by T."""
        return logits[..., self.vocab_size - NUM_BINS:self.vocab_size].float().flip(-1) / temperature

    def token_logprobs(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       bins: torch.Tensor, temperature: float | None = None,
                       with_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log pi(bin_k | image, prompt, bins_<k) for the 7 action tokens.

        Args:
            pixel_values: (B * C, 3, S, S) from :meth:`pixel_values`.
            input_ids, attention_mask: (B, L) left-padded prompts from :meth:`prompt_ids`.
            bins: (B, 7) int64 action bins.
        Returns:
            (B, 7) log-probs (with gradients), and (B, 7) entropies if ``with_entropy``.
        """
        temperature = self.config.temperature if temperature is None else temperature
        bins = bins.to(self.device)
        ids = torch.cat([input_ids, self.action_ids(bins)], 1)
        mask = torch.cat([attention_mask, torch.ones_like(bins)], 1)
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, pixel_values=pixel_values, attention_mask=mask, position_ids=position_ids,
                         use_cache=False, logits_to_keep=ACTION_DIM + 1)
        logits = self._action_logits(out.logits[:, :ACTION_DIM], temperature)  # positions L-1 .. L+5
        logp = logits.log_softmax(-1)
        chosen = logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
        if with_entropy:
            return chosen, -(logp.exp() * logp).sum(-1)
        return chosen

    @torch.no_grad()
    def sample(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode 7 action bins with a KV cache. ``temperature`` 0 is greedy.

        Returns (B, 7) bins and their (B, 7) log-probs at ``self.config.temperature`` (the training
        distribution; for greedy decoding they are reported at that temperature as well).
        """
        mask = attention_mask
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=mask,
                         position_ids=position_ids, use_cache=True, logits_to_keep=1)
        cache, next_pos = out.past_key_values, position_ids[:, -1:] + 1
        bins, logps = [], []
        logits = out.logits[:, -1]
        for k in range(ACTION_DIM):
            scored = self._action_logits(logits, self.config.temperature).log_softmax(-1)
            if temperature > 0:
                probs = self._action_logits(logits, temperature).softmax(-1)
                b = torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)
            else:
                b = scored.argmax(-1)
            bins.append(b)
            logps.append(scored.gather(-1, b[:, None]).squeeze(-1))
            if k == ACTION_DIM - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = self.model(input_ids=self.action_ids(b)[:, None], attention_mask=mask, position_ids=next_pos,
                             past_key_values=cache, use_cache=True)
            cache, next_pos, logits = out.past_key_values, next_pos + 1, out.logits[:, -1]
        return torch.stack(bins, 1), torch.stack(logps, 1)

    def bins_to_actions(self, bins: np.ndarray | torch.Tensor) -> np.ndarray:
        """Action bins -> env actions: bin centres, un-normalised; the gripper binarised to -1 / +1."""
        actions = self.normalizer.unnormalize(self.action_tokenizer.decode(np.asarray(bins)))
        actions[..., 6] = np.where(actions[..., 6] > 0, 1.0, -1.0)
        return np.clip(actions, -1.0, 1.0).astype(np.float32)

    # -- the rollout policy interface ----------------------------------------------------------------

    def reset(self, num_envs: int) -> None:
        """Stateless between steps (one action per observation); nothing to clear."""

    def act(self, observations: Sequence[Observation], instruction: str, env_ids: np.ndarray,
            temperature: float | None = None) -> PolicyStep:
        """Sample actions for a batch of observations sharing one instruction (a group)."""
        temperature = self.config.temperature if temperature is None else temperature
        images = {c: np.stack([o.images[c] for o in observations]) for c in self.config.cameras
                  if all(c in o.images for o in observations)}
        ids, mask = self.prompt_ids([instruction] * len(observations))
        was_training = self.training
        self.eval()
        bins, logps = self.sample(self.pixel_values(images), ids, mask, temperature)
        self.train(was_training)
        bins_np = bins.cpu().numpy()
        return PolicyStep(actions=self.bins_to_actions(bins_np), action_tokens=bins_np, logprobs=logps.cpu().numpy())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    def _load_state(self, state: dict[str, torch.Tensor], source: Path, strict: bool = True) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or (strict and missing):
            raise DatasetError(
                f"{source} does not match the model in {CONFIG_FILE}: {len(missing)} missing keys "
                f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
            )

    def _write_common(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        (directory / CONFIG_FILE).write_text(json.dumps({"policy": self.config.to_dict()}, indent=2))
        self.normalizer.save(directory)


def _read_config(directory: Path, overrides: dict) -> PolicyConfig:
    if not (directory / CONFIG_FILE).exists():
        raise DatasetError(f"{directory} is not a tgrpo policy checkpoint (no {CONFIG_FILE})")
    return PolicyConfig.from_dict({**json.loads((directory / CONFIG_FILE).read_text())["policy"], **overrides})


class TinyVLA(LlavaVLA):
    """The CPU default: a small Llava VLA built from config classes, trained from scratch by ``tgrpo sft``."""

    def __init__(self, config: PolicyConfig, text: TextTokenizer | None = None,
                 normalizer: ActionNormalizer | None = None):
        text = text or TextTokenizer.for_libero(config.size.text_vocab)
        if text.size != config.size.text_vocab:
            raise ConfigError(f"text tokenizer has {text.size} ids, the model expects {config.size.text_vocab}")
        vocab = config.size.text_vocab + NUM_BINS
        super().__init__(build_llava(config, vocab, text), text, normalizer or ActionNormalizer.identity(ACTION_DIM),
                         config, action_vocab_end=vocab,
                         image_tokens_per_camera=(config.image_size // config.size.patch_size) ** 2)

    def save(self, directory: str | Path) -> Path:
        """Write policy.json, policy.safetensors (all weights), tokenizer.json and dataset_statistics.json."""
        directory = Path(directory)
        self._write_common(directory)
        self.text.save(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, **overrides: object) -> "TinyVLA":
        """Rebuild the policy saved in ``directory``; ``overrides`` replace fields of its config."""
        from safetensors.torch import load_file

        directory = Path(directory)
        policy = cls(_read_config(directory, overrides), TextTokenizer.load(directory), ActionNormalizer.load(directory))
        policy._load_state(load_file(str(directory / WEIGHTS_FILE)), directory / WEIGHTS_FILE)
        return policy
