"""Image-only U-Net g(I) for weakly supervised object localisation (paper §3.2, "WSOL").

The encoder is any :mod:`wwbl.networks.backbones` backbone returning multi-scale taps. The
decoder follows the reference WSOL code (commit f237ab4, ``SkipDecoder``): a bottleneck on the
deepest tap, then one block per shallower tap that up-samples to the tap's size (a no-op when
the sizes already match, as the reference's pool1 block), concatenates the skip and applies
two conv-BN-ReLU layers; the last block ends in a 1-channel conv. The map is resized
bilinearly (align_corners=True) to the input size and passed through a sigmoid.

Decoder widths follow the skip widths, capped at ``max_decoder_channels`` so that wide
backbones (ResNet-50: 2048 channels) stay affordable; with VGG16 the cap is never hit and the
widths equal the reference (512, 512, 256, 128, 64).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wwbl.networks.backbones import InputNormalize, build_tapped_backbone
from wwbl.networks.grounding_net import BottleneckBlock, conv_bn_relu


class SkipUpBlock(nn.Module):
    """Resize to the skip's size → concat skip → two conv layers (the last optionally raw)."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, final_channels: int | None = None) -> None:
        super().__init__()
        layers = conv_bn_relu(in_ch + skip_ch, out_ch)
        if final_channels is None:
            layers += conv_bn_relu(out_ch, out_ch)
        else:
            layers.append(nn.Conv2d(out_ch, final_channels, 3, padding=1))
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class WSOLUNet(nn.Module):
    """U-Net with skip connections; ``forward(images01)`` → B×H×W map in [0, 1].

    Args:
        backbone: one of :func:`wwbl.networks.backbones.available_backbones` (torchvision's, or
            timm's feature pyramid for the paper's backbones torchvision lacks: "mobilenet_v1").
        pretrained_backbone: load the backbone's ImageNet weights (torchvision's from the torch
            hub cache, timm's from the Hugging Face hub cache; never downloaded).
        backbone_weights: a local file with those ImageNet weights, used instead of the caches
            (needs ``pretrained_backbone``; not part of :meth:`config`, like the latter).
        input_norm: "reference" (mean = std = 0.5) or "imagenet".
        max_decoder_channels: cap on the decoder widths.
        vgg_width_div: channel divisor for a tiny VGG16 (tests); vgg16 only.
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        pretrained_backbone: bool = True,
        input_norm: str = "reference",
        max_decoder_channels: int = 512,
        vgg_width_div: int = 1,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        self._config = {"backbone": backbone, "input_norm": input_norm,
                        "max_decoder_channels": max_decoder_channels, "vgg_width_div": vgg_width_div}
        self.normalize = InputNormalize(input_norm)
        self.encoder = build_tapped_backbone(backbone, pretrained_backbone, vgg_width_div, backbone_weights)
        chans = self.encoder.channels
        width = min(chans[-1], max_decoder_channels)
        self.bottleneck = BottleneckBlock(chans[-1], width)
        blocks = []
        skips = list(reversed(chans[:-1]))
        for i, skip_ch in enumerate(skips):
            out_ch = min(skip_ch, max_decoder_channels)
            last = i == len(skips) - 1
            blocks.append(SkipUpBlock(width, skip_ch, out_ch, final_channels=1 if last else None))
            width = out_ch
        self.decoder = nn.ModuleList(blocks)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without ``pretrained_backbone``)."""
        return dict(self._config)

    def forward(self, images01: torch.Tensor, text_emb: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        """B×H×W maps; ``text_emb`` is ignored (image-only network) and ``image_index`` (T long)
        selects/repeats the per-image maps, so both networks share one call signature."""
        taps = self.encoder(self.normalize(images01))
        x = self.bottleneck(taps[-1])
        for block, skip in zip(self.decoder, reversed(taps[:-1])):
            x = block(x, skip)
        x = F.interpolate(x, size=images01.shape[-2:], mode="bilinear", align_corners=True)
        maps = torch.sigmoid(x).squeeze(1)
        return maps if image_index is None else maps[image_index]
