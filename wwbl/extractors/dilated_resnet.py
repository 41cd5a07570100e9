"""Dense CLIP ResNet features for Adapting CLIP (Li et al. 2022, Sec. 4.4; notes §1.3).

Functional forwards over an open_clip `ModifiedResNet`'s own parameters (nothing is copied or
patched):

* `dilated_features`: every stride is replaced by dilation (atrous convolution), so the output keeps
  the input's resolution. The stem convs run at stride 1; each 3×3 conv gets the dilation accumulated
  so far; each anti-aliasing ``AvgPool(s)`` becomes a box filter of size s with the current dilation
  and no padding (the map shrinks slightly), after which the dilation is multiplied by s.
* the ordinary stride-32 trunk (`resnet_access.last_stage_features`) for the reference's
  "denseclip" baseline.
* `value_projection`: the attention pool reduced to ``c_proj(v_proj(x))`` at every location (an
  attention over one location and its duplicate, Eq. 10-13), mapping features into CLIP's space.

The open_clip attribute names used (stem conv1..3/bn1..3/act1..3/avgpool, layer1..4 of Bottleneck
blocks with conv1..3, bn1..3, stride, downsample = [AvgPool, conv, bn], attnpool.v_proj/c_proj) have
been stable across open_clip 2.x-3.x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wwbl.extractors.resnet_access import check_resnet, last_stage_features


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


def dilated_features(visual: nn.Module, x: Tensor) -> Tensor:
    """Stride-1 ``layer4`` features ``B×C×H'×W'`` (H' = H minus the box filters' shrinkage)."""
    check_resnet(visual)
    stem_stride = visual.conv1.stride[0]
    out = visual.act1(visual.bn1(_conv(visual.conv1, x, 1)))
    dilation = stem_stride
    out = visual.act2(visual.bn2(_conv(visual.conv2, out, dilation)))
    out = visual.act3(visual.bn3(_conv(visual.conv3, out, dilation)))
    pool = visual.avgpool.kernel_size
    pool = pool if isinstance(pool, int) else pool[0]
    out = _box_filter(out, pool, dilation)
    dilation *= pool
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        for block in layer:
            out, dilation = _dilated_bottleneck(block, out, dilation)
    return out


def value_projection(visual: nn.Module, features: Tensor) -> Tensor:
    """Per-location CLIP embeddings ``B×D×H×W`` = ``c_proj(v_proj(f))`` (unnormalised)."""
    pool = visual.attnpool
    channels_last = features.permute(0, 2, 3, 1)
    embedded = F.linear(
        F.linear(channels_last, pool.v_proj.weight, pool.v_proj.bias), pool.c_proj.weight, pool.c_proj.bias
    )
    return embedded.permute(0, 3, 1, 2)


def centre_crop(maps: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Centre crop of the last two dimensions to ``size_hw``."""
    top = (maps.shape[-2] - size_hw[0]) // 2
    left = (maps.shape[-1] - size_hw[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {tuple(maps.shape[-2:])} to {size_hw}")
    return maps[..., top : top + size_hw[0], left : left + size_hw[1]]


@torch.no_grad()
def dense_resnet_embeddings(visual: nn.Module, x: Tensor, pad: int = 64, high_res: bool = True) -> Tensor:
    """Per-pixel CLIP embeddings ``B×D×H×W`` (unnormalised) of prepared images ``B×3×H×W``.

    The input is zero-padded by ``pad`` pixels on every side (0 = the mean colour after CLIP
    normalisation; the reference's boundary heuristic). ``high_res=True``: dilated trunk, cropped
    back to ``H×W``. ``high_res=False``: stride-32 trunk, cropped to ``H/32×W/32`` cells and
    bilinearly upsampled to ``H×W``.
    """
    height, width = x.shape[-2:]
    padded = F.pad(x.to(visual.conv1.weight.dtype), (pad, pad, pad, pad))
    if high_res:
        return value_projection(visual, centre_crop(dilated_features(visual, padded), (height, width)))
    features = last_stage_features(visual, padded)
    cells = centre_crop(features, (max(1, height // 32), max(1, width // 32)))
    dense = value_projection(visual, cells)
    return F.interpolate(dense, size=(height, width), mode="bilinear", align_corners=False)
