"""Dense CLIP ResNet features for Adapting CLIP (Li et al. 2022, Sec. 4.4; REFERENCE.md E§1.3).

Per-pixel CLIP embeddings from a ResNet CLIP, through the forwards of
`wwbl.clip.resnet.ResNetInternals` (nothing is copied or patched):

* the dilated trunk (`ResNetInternals.dilated_features`, every stride replaced by dilation), or
  the ordinary stride-32 trunk (`ResNetInternals.last_stage_features`) for the reference's
  "denseclip" baseline;
* then `ResNetInternals.value_projection`: the attention pool reduced to ``c_proj(v_proj(x))`` at
  every location, mapping features into CLIP's space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wwbl.clip.resnet import ResNetInternals


def centre_crop(maps: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Centre crop of the last two dimensions to ``size_hw``."""
    top = (maps.shape[-2] - size_hw[0]) // 2
    left = (maps.shape[-1] - size_hw[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {tuple(maps.shape[-2:])} to {size_hw}")
    return maps[..., top : top + size_hw[0], left : left + size_hw[1]]


@torch.no_grad()
def dense_resnet_embeddings(resnet: ResNetInternals, x: Tensor, pad: int = 64, high_res: bool = True) -> Tensor:
    """Per-pixel CLIP embeddings ``B×D×H×W`` (unnormalised) of prepared images ``B×3×H×W``.

    The input is zero-padded by ``pad`` pixels on every side (0 = the mean colour after CLIP
    normalisation; the reference's boundary heuristic). ``high_res=True``: dilated trunk, cropped
    back to ``H×W``. ``high_res=False``: stride-32 trunk, cropped to ``H/32×W/32`` cells and
    bilinearly upsampled to ``H×W``.
    """
    height, width = x.shape[-2:]
    padded = F.pad(x.to(resnet.dtype), (pad, pad, pad, pad))
    if high_res:
        return resnet.value_projection(centre_crop(resnet.dilated_features(padded), (height, width)))
    features = resnet.last_stage_features(padded)
    cells = centre_crop(features, (max(1, height // 32), max(1, width // 32)))
    dense = resnet.value_projection(cells)
    return F.interpolate(dense, size=(height, width), mode="bilinear", align_corners=False)
