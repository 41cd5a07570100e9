"""Image encoders for network g, built from torchvision or timm with optional ImageNet weights.

Every encoder returns its multi-scale outputs (the "taps") from the highest to the lowest
resolution and exposes their widths as ``channels``, so a U-Net decoder can use them as skip
connections; :func:`build_stride8_encoder` cuts one at its stride-8 output for the grounding
network. torchvision encoders are a
:class:`TappedBackbone` (an ordered list of stages); the paper's backbones that torchvision
lacks (MobileNetV1) come from timm's ``features_only`` feature pyramids
(:class:`TimmTappedBackbone`).

ImageNet weights are only read locally: torchvision's from the torch hub cache, timm's from the
Hugging Face hub cache, or either from an explicit ``weights_path``. This project never
downloads; a missing file raises :class:`wwbl.errors.MissingResourceError` that names the file
and how to supply it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from itertools import pairwise

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file as load_safetensors
from torch import nn
from torchvision import models

from wwbl.errors import MissingResourceError

# Same layer layout as torchvision's VGG16 ``features`` (numbers are output channels, "M" a
# 2×2 max-pool), so state-dict indices match ``vgg16().features``.
_VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)
# features[:23] ends at relu4_3; features[:30] at relu5_3.
VGG16_RELU4_3_END = 23
VGG16_RELU5_3_END = 30


class TappedBackbone(nn.Module):
    """Runs ``stages`` in order and returns the output of every stage (high → low resolution)."""

    def __init__(self, stages: Sequence[nn.Module], channels: Sequence[int]) -> None:
        super().__init__()
        if len(stages) != len(channels):
            raise ValueError("one channel count per stage is required")
        self.stages = nn.ModuleList(stages)
        self.channels = list(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps


def _cached_weights_path(weights: models.WeightsEnum) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        return load_safetensors(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _require_weights_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise MissingResourceError(f"{what}: the weights file '{path}' does not exist")
    return path


def load_imagenet_state_dict(weights: models.WeightsEnum, path: str | None = None) -> dict[str, torch.Tensor]:
    """State dict of a torchvision weights enum, read from ``path`` if given, else from the
    torch hub cache only."""
    if path is not None:
        return _read_state_dict(_require_weights_file(path, f"ImageNet weights {weights}"))
    path = _cached_weights_path(weights)
    if not os.path.isfile(path):
        raise MissingResourceError(
            f"ImageNet weights {weights} are not available offline: expected the file "
            f"'{path}'. Download {weights.url} on a machine with network access and copy it "
            f"to that path (or set TORCH_HOME, or pass the file as backbone_weights), or build "
            f"the network with pretrained_backbone=False."
        )
    return _read_state_dict(path)


def vgg16_features(pretrained: bool, end: int = VGG16_RELU4_3_END, width_div: int = 1,
                   weights_path: str | None = None) -> nn.Sequential:
    """``vgg16().features[:end]`` (no BatchNorm); ``width_div`` > 1 divides every channel count.

    ``weights_path`` replaces the torch hub cache as the source of the ImageNet weights.

    The scaled variant exists so tests and tiny experiments can build the same topology
    cheaply; it cannot use the ImageNet weights.
    """
    if width_div < 1:
        raise ValueError(f"width_div must be >= 1, got {width_div}")
    if pretrained and width_div != 1:
        raise ValueError("ImageNet weights need the full VGG16 width (width_div=1)")
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_ch = max(1, int(item) // width_div)
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = out_ch
    features = nn.Sequential(*layers[:end])
    init_vgg_(features)
    if pretrained:
        state = load_imagenet_state_dict(models.VGG16_Weights.IMAGENET1K_V1, weights_path)
        prefix = "features."
        features.load_state_dict(
            {k[len(prefix):]: v for k, v in state.items()
             if k.startswith(prefix) and int(k[len(prefix):].split(".")[0]) < end}
        )
    return features


def init_vgg_(module: nn.Module) -> None:
    """torchvision's VGG initialisation, in place: Kaiming-normal (fan_out, ReLU) convolutions
    with zero bias, BatchNorm at identity.

    PyTorch's default conv init (Kaiming-uniform with a = sqrt(5)) shrinks the activations by
    about 1/sqrt(3) per layer; over the ten convolutions up to relu4_3 the across-image signal
    falls from 0.16 to 2e-5, so a VGG16 trained from scratch sees a constant image.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def vgg16_channels(end: int = VGG16_RELU4_3_END, width_div: int = 1) -> int:
    """Output channels of ``vgg16_features(end=end, width_div=width_div)``."""
    channels, index = 3, 0
    for item in _VGG16_LAYOUT:
        if index >= end:
            break
        if item == "M":
            index += 1  # pool
        else:
            channels, index = int(item), index + 2  # conv + ReLU
    return max(1, channels // width_div)


def _vgg16_tapped(pretrained: bool, width_div: int, weights_path: str | None) -> TappedBackbone:
    f = vgg16_features(pretrained, end=VGG16_RELU5_3_END, width_div=width_div, weights_path=weights_path)
    # Taps after relu1_2, pool1, relu2_2, relu3_3, relu4_3, relu5_3 (reference WSOL encoder).
    cuts = [0, 4, 5, 9, 16, 23, 30]
    stages = [f[a:b] for a, b in pairwise(cuts)]
    chans = [vgg16_channels(b, width_div) for b in cuts[1:]]
    return TappedBackbone(stages, chans)


def _resnet_tapped(name: str, pretrained: bool, weights_path: str | None) -> TappedBackbone:
    net = models.get_model(name, weights=None)
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(models.get_model_weights(name).IMAGENET1K_V1, weights_path))
    expansion = 4 if name in ("resnet50", "resnet101", "resnet152") else 1
    stages = [
        nn.Sequential(net.conv1, net.bn1, net.relu),
        nn.Sequential(net.maxpool, net.layer1),
        net.layer2, net.layer3, net.layer4,
    ]
    return TappedBackbone(stages, [64] + [c * expansion for c in (64, 128, 256, 512)])


def _mobilenet_v2_tapped(pretrained: bool, weights_path: str | None) -> TappedBackbone:
    net = models.mobilenet_v2(weights=None)
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(models.MobileNet_V2_Weights.IMAGENET1K_V1, weights_path))
    f = net.features
    cuts = [0, 2, 4, 7, 14, 19]  # stride changes: /2, /4, /8, /16, /32
    return TappedBackbone([f[a:b] for a, b in pairwise(cuts)], [16, 24, 32, 96, 1280])


def _densenet161_tapped(pretrained: bool, weights_path: str | None) -> TappedBackbone:
    net = models.densenet161(weights=None)
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(models.DenseNet161_Weights.IMAGENET1K_V1, weights_path))
    f = net.features
    stages = [
        nn.Sequential(f.conv0, f.norm0, f.relu0),
        nn.Sequential(f.pool0, f.denseblock1),
        nn.Sequential(f.transition1, f.denseblock2),
        nn.Sequential(f.transition2, f.denseblock3),
        nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU(inplace=False)),
    ]
    return TappedBackbone(stages, [96, 384, 768, 2112, 2208])


def _inception_v3_tapped(pretrained: bool, weights_path: str | None) -> TappedBackbone:
    net = models.inception_v3(weights=None, aux_logits=True, init_weights=not pretrained)
    if pretrained:
        net.load_state_dict(load_imagenet_state_dict(models.Inception_V3_Weights.IMAGENET1K_V1, weights_path))
    stages = [
        nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3),
        nn.Sequential(net.maxpool1, net.Conv2d_3b_1x1, net.Conv2d_4a_3x3),
        nn.Sequential(net.maxpool2, net.Mixed_5b, net.Mixed_5c, net.Mixed_5d),
        nn.Sequential(net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e),
        nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c),
    ]
    return TappedBackbone(stages, [64, 192, 288, 768, 2048])


# The paper's backbones (Tables 2 and 4) that torchvision lacks, by our name → timm model name.
# MobileNetV1 is width 1.0 at 224 px; timm's ImageNet weights are its own "ra4" training recipe,
# not the original release. HarDNet has no timm or torchvision implementation.
TIMM_BACKBONES: dict[str, str] = {"mobilenet_v1": "mobilenetv1_100"}
# Files a timm model's Hugging Face hub repository stores its weights in, in timm's order.
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class TimmTappedBackbone(nn.Module):
    """A timm ``features_only`` model: returns one tap per stride (2, 4, …, 32) like
    :class:`TappedBackbone`, with the widths timm reports as ``channels``."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.channels = list(features.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.features(x))


def timm_weights_file(model_name: str, weights_path: str | None = None) -> str:
    """Local file of a timm model's default ImageNet weights: ``weights_path`` if given, else
    the copy in the Hugging Face hub cache; never downloads."""
    what = f"ImageNet weights of timm model '{model_name}'"
    if weights_path is not None:
        return _require_weights_file(weights_path, what)
    hub_id = timm.models.get_pretrained_cfg(model_name).hf_hub_id
    for filename in _HF_WEIGHT_FILES:
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return cached
    raise MissingResourceError(
        f"{what} are not available offline: they are not in the Hugging Face hub cache "
        f"(HF_HUB_CACHE / HF_HOME). On a machine with network access run "
        f"`huggingface-cli download {hub_id}` and copy the cache over, or pass the downloaded "
        f"'{_HF_WEIGHT_FILES[0]}' as backbone_weights, or build the network with "
        f"pretrained_backbone=False."
    )


def _timm_overlay(model_name: str, pretrained: bool, weights_path: str | None) -> dict[str, str] | None:
    """timm's ``pretrained_cfg_overlay`` pointing at the local weights file (None from scratch)."""
    return {"file": timm_weights_file(model_name, weights_path)} if pretrained else None


def _timm_tapped(model_name: str, pretrained: bool, weights_path: str | None) -> TimmTappedBackbone:
    features = timm.create_model(model_name, pretrained=pretrained, features_only=True,
                                 pretrained_cfg_overlay=_timm_overlay(model_name, pretrained, weights_path))
    return TimmTappedBackbone(features)


class TimmStrideTap(nn.Module):
    """A timm model pruned after its stage at ``stride`` (timm's ``prune_intermediate_layers``);
    returns that stage's feature map, ``channels`` wide."""

    def __init__(self, model_name: str, pretrained: bool, weights_path: str | None, stride: int) -> None:
        super().__init__()
        model = timm.create_model(model_name, pretrained=pretrained,
                                  pretrained_cfg_overlay=_timm_overlay(model_name, pretrained, weights_path))
        indices = [i for i, info in enumerate(model.feature_info) if info["reduction"] == stride]
        if not indices:
            raise ValueError(f"timm model '{model_name}' has no stage at stride {stride}")
        self.index = indices[-1]
        model.prune_intermediate_layers([self.index], prune_norm=True, prune_head=True)  # a list: absolute indices
        self.model = model
        self.channels = int(model.feature_info[self.index]["num_chs"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_intermediates(x, indices=[self.index], intermediates_only=True)[0]


Backbone = TappedBackbone | TimmTappedBackbone
_BUILDERS: dict[str, Callable[[bool, int, str | None], Backbone]] = {
    "vgg16": _vgg16_tapped,
    "resnet18": lambda p, w, f: _resnet_tapped("resnet18", p, f),
    "resnet34": lambda p, w, f: _resnet_tapped("resnet34", p, f),
    "resnet50": lambda p, w, f: _resnet_tapped("resnet50", p, f),
    "resnet101": lambda p, w, f: _resnet_tapped("resnet101", p, f),
    "mobilenet_v2": lambda p, w, f: _mobilenet_v2_tapped(p, f),
    "densenet161": lambda p, w, f: _densenet161_tapped(p, f),
    "inception_v3": lambda p, w, f: _inception_v3_tapped(p, f),
    **{name: (lambda p, w, f, m=model: _timm_tapped(m, p, f)) for name, model in TIMM_BACKBONES.items()},
}


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_tapped_backbone`."""
    return sorted(_BUILDERS)


def _check_backbone_args(name: str, pretrained: bool, width_div: int, weights_path: str | None) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone '{name}'; available: {available_backbones()}")
    if width_div != 1 and name != "vgg16":
        raise ValueError(f"width_div is only supported for vgg16, not '{name}'")
    if weights_path is not None and not pretrained:
        raise ValueError("weights_path is a source of pretrained weights: it needs pretrained=True")


def build_tapped_backbone(name: str, pretrained: bool, width_div: int = 1,
                          weights_path: str | None = None) -> Backbone:
    """Build a multi-scale encoder; ``width_div`` is only supported for ``vgg16``.

    ``weights_path`` is a local file with the backbone's ImageNet weights (the torchvision or
    timm checkpoint, ``.pth``/``.bin`` or ``.safetensors``) used instead of the caches.
    """
    _check_backbone_args(name, pretrained, width_div, weights_path)
    return _BUILDERS[name](pretrained, width_div, weights_path)


# Every torchvision encoder but VGG16 taps at strides 2, 4, 8, 16, 32: its stride-8 tap is the third.
_STRIDE8_TAP = 2


def build_stride8_encoder(name: str, pretrained: bool, width_div: int = 1,
                          weights_path: str | None = None) -> tuple[nn.Module, int]:
    """An encoder that ends at ``name``'s stride-8 output (deeper stages are not built), and
    that output's width: the image encoder of the grounding network.

    "vgg16" is ``vgg16_features()`` (relu4_3, the paper's), with the state-dict keys of
    torchvision's ``vgg16().features``; e.g. "resnet50" ends after ``layer2`` (512 channels).
    """
    _check_backbone_args(name, pretrained, width_div, weights_path)
    if name == "vgg16":
        encoder = vgg16_features(pretrained, width_div=width_div, weights_path=weights_path)
        return encoder, vgg16_channels(width_div=width_div)
    if name in TIMM_BACKBONES:
        tap = TimmStrideTap(TIMM_BACKBONES[name], pretrained, weights_path, stride=8)
        return tap, tap.channels
    tapped = _BUILDERS[name](pretrained, width_div, weights_path)
    return nn.Sequential(*tapped.stages[:_STRIDE8_TAP + 1]), tapped.channels[_STRIDE8_TAP]


# Input normalisations applied inside the networks to [0, 1] images. "reference" is the
# released WWbL code's mean = std = 0.5 ([-1, 1] inputs); "imagenet" is torchvision's.
INPUT_NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "reference": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class InputNormalize(nn.Module):
    """Maps [0, 1] images to the network's input space (constants, not saved as state)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm '{name}'; choose one of {sorted(INPUT_NORMS)}")
        mean, std = INPUT_NORMS[name]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        if images01.dim() != 4 or images01.shape[1] != 3:
            raise ValueError(f"expected B×3×H×W images in [0, 1], got shape {tuple(images01.shape)}")
        return (images01 - self.mean) / self.std
