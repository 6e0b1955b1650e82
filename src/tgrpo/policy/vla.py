"""The policy contract, and the default VLA: an OpenVLA-shaped model small enough for CPU.

:class:`LlavaVLA` serves the contract on any Llava-style model (image tokens spliced into the prompt):
the prompt is ``<s> <image>*P [<proprio>] In: What action should the robot take to {instruction}? Out:``
(image tokens after BOS, as OpenVLA), followed by 7 action tokens decoded autoregressively with a KV
cache. Action tokens are the last 256 ids of the vocabulary (OpenVLA's tokenizer); the action head is
restricted to them, both when sampling and when scoring, so sampling log-probs and teacher-forced
log-probs are the same distribution.

:class:`TinyVLA`, the CPU default, is :class:`TinyVLAModel`: a vision encoder (ImageNet-pretrained
EfficientNet-Lite0, frozen, by default; see ``tgrpo.policy.vision``) -> Llava's linear-GELU-linear
projector -> a Llama causal LM from transformers' config classes, plus one proprioception token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
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
PROPRIO_DIM = 8  # ee_pos (3), ee axis-angle (3), finger positions (2)
WEIGHTS_FILE = "policy.safetensors"
CONFIG_FILE = "policy.json"


def build_llava(config: PolicyConfig, vocab_size: int, special: TextTokenizer) -> nn.Module:
    """A randomly initialised ``LlavaForConditionalGeneration`` with a SigLIP tower (no download).

    Used to write tiny standard-class checkpoints that exercise the ``pretrained-vla`` path.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    s = config.size
    patches = (config.image_size // s.patch_size) ** 2
    vision = SiglipVisionConfig(hidden_size=s.vision_width, intermediate_size=s.vision_mlp,
                                num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
                                image_size=config.image_size, patch_size=s.patch_size, vision_use_head=False)
    llava = LlavaConfig(vision_config=vision, text_config=_llama_config(config, vocab_size, special, patches),
                        image_token_index=special.image_id, image_seq_length=patches,
                        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu")
    torch.manual_seed(config.seed)
    return LlavaForConditionalGeneration(llava)


def _llama_config(config: PolicyConfig, vocab_size: int, special: TextTokenizer, patches: int):
    from transformers import LlamaConfig

    s = config.size
    return LlamaConfig(hidden_size=s.text_width, intermediate_size=s.text_mlp, num_hidden_layers=s.text_layers,
                       num_attention_heads=s.text_heads, num_key_value_heads=s.text_heads, vocab_size=vocab_size,
                       max_position_embeddings=max(512, 2 * patches * len(config.cameras)),
                       pad_token_id=special.pad_id, bos_token_id=special.bos_id, eos_token_id=special.eos_id)


class TinyVLAModel(nn.Module):
    """Vision encoder -> projector -> Llama LM, with an optional proprioception token.

    ``forward`` takes Llava's arguments; the image tokens of ``input_ids`` (``C * P`` per row, camera by
    camera) are replaced by the projected vision features plus a learned per-token position embedding,
    the proprio token by the projected proprioception. ``image_features`` (the encoder's output, cached
    when the encoder is frozen) may replace ``pixel_values``.
    """

    def __init__(self, config: PolicyConfig, text: TextTokenizer, vocab_size: int):
        super().__init__()
        from transformers import LlamaForCausalLM

        from tgrpo.policy.vision import build_vision_encoder

        torch.manual_seed(config.seed)
        self.vision = build_vision_encoder(config)
        width = config.size.text_width
        self.merge = config.patch_merge
        grid = math.isqrt(self.vision.num_patches)
        if grid % self.merge:
            raise ConfigError(f"patch_merge {self.merge} must divide the {grid} x {grid} feature grid")
        self.tokens_per_camera = (grid // self.merge) ** 2
        self.image_tokens = self.tokens_per_camera * len(config.cameras)
        merged = self.vision.feature_dim * self.merge ** 2
        # LayerNorm first: a frozen conv trunk's features are not scaled for the LM (values in the tens)
        self.projector = nn.Sequential(nn.LayerNorm(merged), nn.Linear(merged, width), nn.GELU(), nn.Linear(width, width))
        self.image_pos = nn.Parameter(0.02 * torch.randn(self.image_tokens, width))
        self.proprio_projector = (nn.Sequential(nn.Linear(PROPRIO_DIM, width), nn.GELU(), nn.Linear(width, width))
                                  if config.proprio else None)
        self.language_model = LlamaForCausalLM(_llama_config(config, vocab_size, text, self.vision.num_patches))
        self.image_id, self.proprio_id = text.image_id, text.proprio_id

    def lora_targets(self) -> list[str]:
        """Linear layers LoRA adapts: the LM's attention and MLP and the projectors (not the LM head, not
        the vision encoder), as OpenVLA's "all-linear" on the language side."""
        return [n for n, m in self.named_modules()
                if isinstance(m, nn.Linear) and not n.startswith("vision") and not n.endswith("lm_head")]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = False,
                logits_to_keep: int = 0, pixel_values: torch.Tensor | None = None,
                image_features: torch.Tensor | None = None, proprio: torch.Tensor | None = None, **_):
        embeds = self.language_model.get_input_embeddings()(input_ids)
        if image_features is None and pixel_values is not None:
            image_features = self.vision(pixel_values)
        if image_features is not None:
            rows = input_ids.shape[0]
            merged = merge_patches(image_features.to(embeds.dtype), self.merge)
            img = self.projector(merged).reshape(rows, self.image_tokens, -1) + self.image_pos
            embeds = _splice(embeds, input_ids == self.image_id, img, "image")
        if proprio is not None:
            if self.proprio_projector is None:
                raise ConfigError("this policy was built without proprioception (policy.proprio = false)")
            embeds = _splice(embeds, input_ids == self.proprio_id, self.proprio_projector(proprio.to(embeds.dtype)),
                             "proprio")
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                   past_key_values=past_key_values, use_cache=use_cache, logits_to_keep=logits_to_keep)


def merge_patches(features: torch.Tensor, k: int) -> torch.Tensor:
    """(N, G*G, D) row-major patch grid -> (N, (G/k)^2, k*k*D): each k x k block concatenated (Qwen2-VL's
    patch merger), so fewer, wider tokens reach the LM without discarding features."""
    if k == 1:
        return features
    n, p, d = features.shape
    g = math.isqrt(p)
    x = features.reshape(n, g // k, k, g // k, k, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (g // k) ** 2, k * k * d)


def _splice(embeds: torch.Tensor, where: torch.Tensor, values: torch.Tensor, what: str) -> torch.Tensor:
    """Replace the embeddings at ``where`` (B, L) by ``values`` (B, K, W), row by row in sequence order."""
    values = values.reshape(-1, embeds.shape[-1])
    if int(where.sum()) != len(values):
        raise ValueError(f"the prompts hold {int(where.sum())} {what} tokens but {len(values)} {what} embeddings "
                         "were given")
    return embeds.masked_scatter(where.unsqueeze(-1), values)


@dataclass
class PolicyInputs:
    """Model inputs of B observations seen through C cameras (one instruction each).

    Attributes:
        input_ids, attention_mask: (B, L) left-padded prompts.
        pixels: (B * C, 3, S, S) normalised images (sample-major), or None once encoded into ``features``.
        features: (B * C, P, D) output of a frozen vision encoder (see :meth:`LlavaVLA.encode`), or None.
        proprio: (B, 8) normalised proprioception, or None for a policy without it.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixels: torch.Tensor | None = None
    features: torch.Tensor | None = None
    proprio: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, index: np.ndarray | torch.Tensor) -> "PolicyInputs":
        """The rows ``index`` (per observation; camera images stay together)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        b = len(self)

        def per_camera(x):
            return None if x is None else x.reshape(b, -1, *x.shape[1:])[idx].flatten(0, 1)

        return PolicyInputs(self.input_ids[idx], self.attention_mask[idx], per_camera(self.pixels),
                            per_camera(self.features), None if self.proprio is None else self.proprio[idx])

    def vision_kwargs(self) -> dict[str, torch.Tensor]:
        """The model's image/proprio keyword arguments (only those present)."""
        kw = {}
        if self.features is not None:
            kw["image_features"] = self.features
        elif self.pixels is not None:
            kw["pixel_values"] = self.pixels
        if self.proprio is not None:
            kw["proprio"] = self.proprio
        return kw


class LlavaVLA(nn.Module):
    """The policy contract on any Llava-style vision-language model (image tokens spliced into the prompt).

    Rollouts call :meth:`act`; the learner builds :class:`PolicyInputs` with :meth:`inputs` (and
    :meth:`encode` to run a frozen vision encoder once) and calls :meth:`token_logprobs`;
    :meth:`reference` gives the frozen base policy (LoRA adapter disabled) for the KL term. Subclasses
    only build the model and write/read checkpoints.

    Args:
        model: the module (forward takes input_ids, attention_mask, position_ids, past_key_values,
            use_cache, logits_to_keep and the keywords of :meth:`PolicyInputs.vision_kwargs`).
        text: prompt encoder (``encode_prompt``, ``pad_id``).
        normalizer: action statistics.
        config: the policy config.
        action_vocab_end: the action tokens are ids ``[end - 256, end)`` (OpenVLA: the tokenizer's 32000).
        image_tokens_per_camera: patches per image.
        pixel_mean, pixel_std: per-channel image normalisation of the vision tower (SigLIP: 0.5, 0.5).
        proprio_normalizer: proprioception statistics, for a policy with ``config.proprio``.

    When the module has a ``vision`` encoder marked ``frozen``, :meth:`encode` caches its output.
    """

    def __init__(self, model: nn.Module, text, normalizer: ActionNormalizer, config: PolicyConfig,
                 action_vocab_end: int, image_tokens_per_camera: int,
                 pixel_mean: Sequence[float] = (0.5, 0.5, 0.5), pixel_std: Sequence[float] = (0.5, 0.5, 0.5),
                 proprio_normalizer: ActionNormalizer | None = None):
        super().__init__()
        self.config = config
        self.text = text
        self.normalizer = normalizer
        self.proprio_normalizer = proprio_normalizer
        if config.proprio and proprio_normalizer is None:
            raise ConfigError("a policy with proprioception needs its statistics (proprio_normalizer)")
        self.vocab_size = action_vocab_end
        self.action_tokenizer = ActionTokenizer()
        self.num_image_tokens = image_tokens_per_camera * len(config.cameras)
        self.model = model.to(device=config.device, dtype=getattr(torch, config.dtype))
        self.__dict__["core"] = self.model  # the unwrapped module, not registered twice (LoRA injects in place)
        self.frozen_vision = bool(getattr(getattr(model, "vision", None), "frozen", False))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.lora_enabled = False
        self._lora_layers: list[tuple[str, nn.Module]] = []
        self._merged: tuple[tuple, dict[str, torch.Tensor]] | None = None
        self._in_reference = False
        if config.lora_rank > 0:
            self.enable_lora(config.lora_rank, config.lora_alpha)
        self.generator = torch.Generator(device=config.device).manual_seed(config.seed)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # -- LoRA and the reference policy ---------------------------------------------------------------

    def lora_targets(self) -> str | list[str]:
        """peft ``target_modules``: every linear layer of a transformers model (OpenVLA's recipe)."""
        return "all-linear"

    def enable_lora(self, rank: int, alpha: int) -> None:
        """Wrap the model with LoRA adapters (:meth:`lora_targets`); freezes the base weights."""
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer

        if self.lora_enabled:
            return
        cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=self.lora_targets(),
                         init_lora_weights="gaussian")
        self.model = get_peft_model(self.model, cfg)
        self.lora_enabled = True
        self._lora_layers = [(n, m) for n, m in self.model.named_modules() if isinstance(m, LoraLayer)]
        self.config = dataclasses.replace(self.config, lora_rank=rank, lora_alpha=alpha)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Inside this context the policy is the frozen base model (adapter off): pi_ref for the KL term."""
        if not self.lora_enabled:
            raise ConfigError("the reference policy needs LoRA (policy.lora_rank > 0): with full fine-tuning "
                              "there is no frozen base inside the same module")
        self._in_reference = True
        try:
            with self.model.disable_adapter():
                yield
        finally:
            self._in_reference = False

    def merged_lora_weights(self) -> dict[str, torch.Tensor]:
        """Each adapted linear layer's weight with its LoRA update folded in: ``W + (alpha / r) B A``.

        Keyed by the LoRA layer's module name in :attr:`model`. Cached, and recomputed only after one of
        the layers' tensors changed (an optimizer step or a load bumps its version counter) or moved.
        """
        key = tuple((p._version, p.data_ptr()) for _, m in self._lora_layers for p in m.parameters())
        if self._merged is None or self._merged[0] != key:
            with torch.no_grad():
                weights = {}
                for name, layer in self._lora_layers:
                    weight = layer.base_layer.weight
                    for adapter in layer.active_adapters:  # peft keeps adapters in float32 under bf16 weights
                        weight = weight + layer.get_delta_weight(adapter)
                    weights[name] = nn.Parameter(weight.to(layer.base_layer.weight.dtype), requires_grad=False)
            self._merged = (key, weights)
        return self._merged[1]

    @contextlib.contextmanager
    def sampling_model(self) -> Iterator[nn.Module]:
        """The model as sampling runs it.

        With a LoRA adapter and ``config.merge_lora_sampling``, inside this context the adapter is off and
        each adapted layer's base weight is swapped for its :meth:`merged_lora_weights` entry (restored on
        exit): one matrix product per linear layer instead of three, the same function up to float
        rounding. The learner's :meth:`token_logprobs` runs outside it, on the adapter's own layers, through
        which its gradients flow; inside :meth:`reference` the plain base model runs.
        """
        if not (self.lora_enabled and self.config.merge_lora_sampling) or self._in_reference:
            yield self.model
            return
        merged = self.merged_lora_weights()
        originals = [layer.base_layer.weight for _, layer in self._lora_layers]
        try:
            for name, layer in self._lora_layers:  # per layer: peft's model-wide disable_adapter() costs 5 ms
                layer.enable_adapters(False)
                layer.base_layer.weight = merged[name]
            yield self.model
        finally:
            for (_, layer), weight in zip(self._lora_layers, originals):
                layer.base_layer.weight = weight
                layer.enable_adapters(True)

    # -- inputs --------------------------------------------------------------------------------------

    def pixel_values(self, images: dict[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """camera -> (B, H, W, 3) uint8 LIBERO images -> (B * C, 3, S, S) float, normalised.

        Images are rotated 180 degrees (LIBERO renders them upside down; OpenVLA's LIBERO script does the
        same), resized to ``image_size`` if needed and scaled with the vision tower's mean and std.
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
        rows = [self.text.encode_prompt(t, self.num_image_tokens, self.config.proprio) for t in instructions]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.text.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    def proprio_values(self, proprio: np.ndarray | None) -> torch.Tensor | None:
        """(B, 8) raw proprioception -> normalised tensor; None for a policy without proprioception."""
        if not self.config.proprio:
            return None
        if proprio is None:
            raise ConfigError("the policy sees proprioception (policy.proprio) but none was given")
        proprio = np.asarray(proprio, dtype=np.float32)
        if proprio.ndim != 2 or proprio.shape[1] != PROPRIO_DIM:
            raise ConfigError(f"proprioception must be (B, {PROPRIO_DIM}), got shape {proprio.shape}")
        return torch.from_numpy(self.proprio_normalizer.normalize(proprio)).to(self.device)

    def inputs(self, images: dict[str, np.ndarray | torch.Tensor], instructions: Sequence[str],
               proprio: np.ndarray | None = None) -> PolicyInputs:
        """Model inputs for B observations: camera -> (B, H, W, 3) images, B instructions, (B, 8) proprio."""
        ids, mask = self.prompt_ids(instructions)
        return PolicyInputs(ids, mask, pixels=self.pixel_values(images), proprio=self.proprio_values(proprio))

    @torch.no_grad()
    def encode(self, inputs: PolicyInputs, chunk: int = 16) -> PolicyInputs:
        """Run a frozen vision encoder once, so repeated passes over the same inputs skip it.

        Images go through in chunks of ``chunk``: on CPU a conv net is faster per image in small batches.
        Returns ``inputs`` unchanged when the encoder trains (or the model has no separable encoder).
        """
        if not self.frozen_vision or inputs.pixels is None:
            return inputs
        return dataclasses.replace(inputs, pixels=None, features=self.image_features(inputs.pixels, chunk))

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """(N, 3, S, S) -> (N, P, D) output of the frozen vision encoder, ``chunk`` images per call."""
        return torch.cat([self.core.vision(pixels[i:i + chunk]) for i in range(0, len(pixels), chunk)])

    def action_ids(self, bins: torch.Tensor) -> torch.Tensor:
        return self.vocab_size - 1 - bins

    # -- forward passes ------------------------------------------------------------------------------

    def _action_logits(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Full-vocab logits (..., V) -> (..., 256) over bins 0..255 (bin b is id V-1-b), divided by T."""
        return logits[..., self.vocab_size - NUM_BINS:self.vocab_size].float().flip(-1) / temperature

    def token_logprobs(self, inputs: PolicyInputs, bins: torch.Tensor, temperature: float | None = None,
                       with_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log pi(bin_k | image, proprio, prompt, bins_<k) for the 7 action tokens.

        Args:
            inputs: B observations (:meth:`inputs`).
            bins: (B, 7) int64 action bins.
        Returns:
            (B, 7) log-probs (with gradients), and (B, 7) entropies if ``with_entropy``.
        """
        temperature = self.config.temperature if temperature is None else temperature
        bins = bins.to(self.device)
        ids = torch.cat([inputs.input_ids, self.action_ids(bins)], 1)
        mask = torch.cat([inputs.attention_mask, torch.ones_like(bins)], 1)
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                         logits_to_keep=ACTION_DIM + 1, **inputs.vision_kwargs())
        logits = self._action_logits(out.logits[:, :ACTION_DIM], temperature)  # positions L-1 .. L+5
        logp = logits.log_softmax(-1)
        chosen = logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)
        if with_entropy:
            return chosen, -(logp.exp() * logp).sum(-1)
        return chosen

    @torch.no_grad()
    def sample(self, inputs: PolicyInputs, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode 7 action bins with a KV cache. ``temperature`` 0 is greedy.

        Returns (B, 7) bins and their (B, 7) log-probs at ``self.config.temperature`` (the training
        distribution; for greedy decoding they are reported at that temperature as well).
        """
        mask = inputs.attention_mask
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        bins, logps = [], []
        with self.sampling_model() as model:
            out = model(input_ids=inputs.input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                        logits_to_keep=1, **inputs.vision_kwargs())
            cache, next_pos = out.past_key_values, position_ids[:, -1:] + 1
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
                out = model(input_ids=self.action_ids(b)[:, None], attention_mask=mask, position_ids=next_pos,
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

    def observation_inputs(self, observations: Sequence[Observation], instruction: str) -> PolicyInputs:
        """:meth:`inputs` for live observations sharing one instruction (proprio from their states)."""
        images = {c: np.stack([o.images[c] for o in observations]) for c in self.config.cameras
                  if all(c in o.images for o in observations)}
        proprio = np.stack([o.state.proprio for o in observations]) if self.config.proprio else None
        return self.inputs(images, [instruction] * len(observations), proprio)

    def act(self, observations: Sequence[Observation], instruction: str, env_ids: np.ndarray,
            temperature: float | None = None) -> PolicyStep:
        """Sample actions for a batch of observations sharing one instruction (a group)."""
        temperature = self.config.temperature if temperature is None else temperature
        was_training = self.training
        self.eval()
        bins, logps = self.sample(self.observation_inputs(observations, instruction), temperature)
        self.train(was_training)
        bins_np = bins.cpu().numpy()
        return PolicyStep(actions=self.bins_to_actions(bins_np), action_tokens=bins_np, logprobs=logps.cpu().numpy())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}

    def _load_state(self, state: dict[str, torch.Tensor], source: Path, strict: bool = True) -> None:
        model = self.model.state_dict()
        wrong = [f"{k}: {tuple(v.shape)} in the file, {tuple(model[k].shape)} in the model" for k, v in state.items()
                 if k in model and tuple(v.shape) != tuple(model[k].shape)]
        if wrong:
            raise DatasetError(f"the weights in {source} do not fit the model described in {CONFIG_FILE} next to it "
                               f"(a checkpoint of another model?): {len(wrong)} tensors differ in shape, e.g. {wrong[0]}")
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
        if self.proprio_normalizer is not None:
            self.proprio_normalizer.save(directory, key="proprio")


def _read_config(directory: Path, overrides: dict) -> PolicyConfig:
    if not (directory / CONFIG_FILE).exists():
        raise DatasetError(f"{directory} is not a tgrpo policy checkpoint (no {CONFIG_FILE})")
    return PolicyConfig.from_dict({**json.loads((directory / CONFIG_FILE).read_text())["policy"], **overrides})


class TinyVLA(LlavaVLA):
    """The CPU default (:class:`TinyVLAModel`), trained by ``tgrpo sft`` (its LM from scratch)."""

    def __init__(self, config: PolicyConfig, text: TextTokenizer | None = None,
                 normalizer: ActionNormalizer | None = None, proprio_normalizer: ActionNormalizer | None = None):
        text = text or TextTokenizer.for_libero(config.size.text_vocab)
        if text.size != config.size.text_vocab:
            raise ConfigError(f"text tokenizer has {text.size} ids, the model expects {config.size.text_vocab}")
        vocab = config.size.text_vocab + NUM_BINS
        model = TinyVLAModel(config, text, vocab)
        if config.proprio and proprio_normalizer is None:
            proprio_normalizer = ActionNormalizer.identity(PROPRIO_DIM)
        super().__init__(model, text, normalizer or ActionNormalizer.identity(ACTION_DIM), config,
                         action_vocab_end=vocab, image_tokens_per_camera=model.tokens_per_camera,
                         pixel_mean=model.vision.pixel_mean, pixel_std=model.vision.pixel_std,
                         proprio_normalizer=proprio_normalizer if config.proprio else None)

    def lora_targets(self) -> list[str]:
        return self.core.lora_targets()

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
        config = _read_config(directory, overrides)
        proprio = ActionNormalizer.load(directory, key="proprio") if config.proprio else None
        policy = cls(config, TextTokenizer.load(directory), ActionNormalizer.load(directory), proprio)
        policy._load_state(load_file(str(directory / WEIGHTS_FILE)), directory / WEIGHTS_FILE)
        return policy
