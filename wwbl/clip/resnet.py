"""Functional access to an open_clip `ModifiedResNet` image tower (the ResNet counterpart of `vit.py`).

The ResNet-based extractors (Grad-CAM, VL-Score, Adapting CLIP) use only the methods here. The
module names read (stem conv1..3/bn1..3/act1..3/avgpool, layer1..4 of Bottleneck blocks with
conv1..3, bn1..3, act1..3, stride, downsample = [AvgPool, conv, bn], attnpool with v_proj/c_proj)
have been stable across open_clip 2.x–3.2; `tests/clip/test_resnet.py` checks these forwards
against open_clip's own on a tiny model.

`dilated_features` is the trunk with every stride replaced by dilation (atrous convolution), so
the output keeps the input's resolution (Adapting CLIP, Li et al. 2022, Sec. 4.4): the stem convs
run at stride 1; each 3×3 conv gets the dilation accumulated so far; each anti-aliasing
``AvgPool(s)`` becomes a box filter of size s with the current dilation and no padding (the map
shrinks slightly), after which the dilation is multiplied by s.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wwbl.clip.vit import UnsupportedCLIPError

_PARTS = ("stem", "layer1", "layer2", "layer3", "layer4", "attnpool")


class ResNetInternals:
    """Parameter-level forwards of `model.visual` (an open_clip `ModifiedResNet`)."""

    def __init__(self, visual: nn.Module):
        missing = [name for name in _PARTS if not hasattr(visual, name)]
        if missing:
            raise UnsupportedCLIPError(
                f"{type(visual).__name__} is not a CLIP ModifiedResNet (missing {missing}); this method needs a "
                "ResNet CLIP such as RN50."
            )
        self._visual = visual

    @property
    def dtype(self) -> torch.dtype:
        return self._visual.conv1.weight.dtype

    def last_stage_features(self, prepared: Tensor) -> Tensor:
        """Output of `layer4` (the input to the attention pool), B×C×h×w (stride 32)."""
        v = self._visual
        x = v.stem(prepared.to(self.dtype))
        return v.layer4(v.layer3(v.layer2(v.layer1(x))))

    def attention_pool(self, features: Tensor) -> Tensor:
        """The unnormalised image embedding B×D from layer4 features."""
        return self._visual.attnpool(features)

    def value_projection(self, features: Tensor) -> Tensor:
        """Per-location CLIP embeddings ``B×D×H×W`` = ``c_proj(v_proj(f))`` (unnormalised).

        The attention pool reduced to one location attending to itself (Adapting CLIP, Eq. 10-13).
        """
        pool = self._visual.attnpool
        channels_last = features.permute(0, 2, 3, 1)
        embedded = F.linear(
            F.linear(channels_last, pool.v_proj.weight, pool.v_proj.bias), pool.c_proj.weight, pool.c_proj.bias
        )
        return embedded.permute(0, 3, 1, 2)

    def dilated_features(self, x: Tensor) -> Tensor:
        """Stride-1 ``layer4`` features ``B×C×H'×W'`` (H' = H minus the box filters' shrinkage)."""
        v = self._visual
        stem_stride = v.conv1.stride[0]
        out = v.act1(v.bn1(_conv(v.conv1, x, 1)))
        dilation = stem_stride
        out = v.act2(v.bn2(_conv(v.conv2, out, dilation)))
        out = v.act3(v.bn3(_conv(v.conv3, out, dilation)))
        pool = v.avgpool.kernel_size
        pool = pool if isinstance(pool, int) else pool[0]
        out = _box_filter(out, pool, dilation)
        dilation *= pool
        for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
            for block in layer:
                out, dilation = _dilated_bottleneck(block, out, dilation)
        return out


def _box_filter(x: Tensor, size: int, dilation: int) -> Tensor:
    """Mean over a ``size×size`` dilated neighbourhood, no padding (the dilated ``AvgPool(size)``)."""
    span = dilation * (size - 1)
    height, width = x.shape[-2] - span, x.shape[-1] - span
    total = sum(
        x[..., dy * dilation : dy * dilation + height, dx * dilation : dx * dilation + width]
        for dy in range(size)
        for dx in range(size)
    )
    return total / (size * size)


def _conv(conv: nn.Conv2d, x: Tensor, dilation: int) -> Tensor:
    """``conv`` at stride 1 with the given dilation, padded to keep the size."""
    padding = dilation * (conv.kernel_size[0] // 2)
    return F.conv2d(x, conv.weight, conv.bias, stride=1, padding=padding, dilation=dilation)


def _dilated_bottleneck(block: nn.Module, x: Tensor, dilation: int) -> tuple[Tensor, int]:
    out = block.act1(block.bn1(block.conv1(x)))
    out = block.act2(block.bn2(_conv(block.conv2, out, dilation)))
    identity = x
    if block.stride > 1:
        out = _box_filter(out, block.stride, dilation)
    out = block.bn3(block.conv3(out))
    if block.downsample is not None:
        pooled = _box_filter(x, block.stride, dilation) if block.stride > 1 else x
        identity = block.downsample[2](block.downsample[1](pooled))
    return block.act3(out + identity), dilation * block.stride
