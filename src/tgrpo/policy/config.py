"""Configuration of the policy (the VLA being fine-tuned)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tgrpo.envs.config import CAMERA_NAMES
from tgrpo.errors import ConfigError, choice_error


DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TinyVLASize:
    """Architecture of the small default VLA (SigLIP-style vision tower + Llama-style causal LM).

    The default (5.6 M parameters) samples a batch of 4 in about 45 ms and trains a batch of 32 in about
    0.6 s on 2 CPU cores (../shared/notes/vla-on-cpu.md); a 31 M version took 8 s per batch.
    """

    patch_size: int = 16
    vision_width: int = 192
    vision_layers: int = 4
    vision_heads: int = 3
    vision_mlp: int = 768
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_mlp: int = 688
    text_vocab: int = 256  # word ids; the 256 action ids follow, so the full vocabulary is 512


@dataclass(frozen=True)
class PolicyConfig:
    """Which VLA to run and how it samples.

    Attributes:
        name: registry name of the model family (``tiny-vla``: the CPU default built from transformers
            classes; ``openvla``: a local OpenVLA-style checkpoint directory, the GPU-scale path).
        checkpoint: directory to load weights, tokenizer and action statistics from; None builds a fresh,
            randomly initialised model (then trained with ``tgrpo sft``).
        pretrained: for ``pretrained-vla``: a local transformers checkpoint directory (config.json, weights,
            tokenizer) of a Llava-style VLA; its weights stay the frozen base, LoRA adapters are trained.
        cameras: cameras the policy sees; OpenVLA and the paper use the third-person ``agentview`` only.
            Each camera adds (image_size / patch_size)^2 image tokens to the prompt.
        image_size: side of the square image fed to the vision tower (the env renders at this size too).
        temperature: sampling temperature of action tokens in training rollouts (the paper samples at 1.0).
            Log-probs for the PPO ratio are taken at the same temperature.
        eval_temperature: temperature for evaluation; 0 is greedy decoding, as OpenVLA's LIBERO evaluation.
        lora_rank: LoRA rank r for RL fine-tuning (paper: LoRA on OpenVLA); 0 trains all weights (SFT of a
            model trained from scratch has to be full fine-tuning).
        lora_alpha: LoRA scale alpha (OpenVLA: min(r, 16)).
        size: architecture of the ``tiny-vla`` model.
        seed: seed of the weight initialisation and of action sampling.
        device: torch device of the model (``cpu``; ``cuda`` for the GPU-scale path).
        dtype: weight dtype: ``float32`` (CPU default) or ``bfloat16`` (the GPU path, as OpenVLA).
        trust_remote_code: let transformers run model code shipped inside a ``pretrained-vla`` checkpoint
            directory (needed by checkpoints with custom architectures; off by default).
    """

    name: str = "tiny-vla"
    checkpoint: str | None = None
    pretrained: str | None = None
    cameras: tuple[str, ...] = ("agentview",)
    image_size: int = 128
    temperature: float = 1.0
    eval_temperature: float = 0.0
    lora_rank: int = 0
    lora_alpha: int = 16
    size: TinyVLASize = field(default_factory=TinyVLASize)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise choice_error("dtype", self.dtype, DTYPES)
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if not self.cameras:
            raise ConfigError("policy.cameras must name at least one camera: " + ", ".join(CAMERA_NAMES))
        for cam in self.cameras:
            if cam not in CAMERA_NAMES:
                raise choice_error("policy camera", cam, CAMERA_NAMES)
        if self.image_size % self.size.patch_size:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of the patch size {self.size.patch_size}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 for sampling rollouts, got {self.temperature}")
        if self.eval_temperature < 0:
            raise ConfigError(f"eval_temperature must be >= 0 (0 = greedy), got {self.eval_temperature}")
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        data = dict(data)
        data["size"] = TinyVLASize(**data.get("size", {}))
        data["cameras"] = tuple(data.get("cameras", ("agentview",)))
        return cls(**data)
