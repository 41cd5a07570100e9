"""Network g for weakly supervised phrase grounding (paper §3.2, "Multi-Model Architecture").

Layout (as the released code): VGG16 ``features[:23]`` (relu4_3, stride 8) → bottleneck →
per-pixel cosine A between the channel-normalised bottleneck features and the normalised
CLIP text embedding → the *un-normalised* features gated by A → two up-sampling blocks
(×2 each, stride 2) → bilinear (align_corners=True) to the input size → sigmoid.

The paper's text speaks of three up-sampling blocks; the released code (and so the released
weights) use two blocks and a final bilinear resize, which is what is built here.

``backbone`` swaps the encoder for another :mod:`wwbl.networks.backbones` encoder cut at its
stride-8 output (e.g. "resnet50": up to ``layer2``, 512 channels); the rest is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wwbl.networks.backbones import InputNormalize, build_stride8_encoder

OUTPUT_INITS = ("pytorch", "positive")


def conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    """3×3 conv (zero padding 1) → BatchNorm → ReLU."""
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class BottleneckBlock(nn.Sequential):
    """Two conv-BN-ReLU layers at constant resolution."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(*conv_bn_relu(in_ch, out_ch), *conv_bn_relu(out_ch, out_ch))


class UpBlock(nn.Sequential):
    """Bilinear ×2 → conv-BN-ReLU → conv (→ BN → ReLU unless it is the output block)."""

    def __init__(self, in_ch: int, out_ch: int, output_block: bool = False) -> None:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
        layers += conv_bn_relu(in_ch, out_ch)
        if output_block:
            layers.append(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        else:
            layers += conv_bn_relu(out_ch, out_ch)
        super().__init__(*layers)


class GroundingNet(nn.Module):
    """Text-conditioned encoder-decoder g(I, z_t) → map in [0, 1] at the input size.

    Args:
        text_dim: size of the CLIP text embedding; also the bottleneck width (512 in the paper).
        decoder_channels: channels of the first up-sampling block (default ``text_dim``).
        vgg_width_div: divides every VGG16 channel count (1 = the real VGG16; >1 for tiny
            test models, which cannot load ImageNet weights); vgg16 only.
        pretrained_backbone: load the encoder's ImageNet weights (from the local cache).
        input_norm: "reference" (mean = std = 0.5, as the released code) or "imagenet".
        backbone_weights: a local ImageNet weights file instead of the cache (needs
            ``pretrained_backbone``; not part of :meth:`config`, like the latter).
        backbone: the encoder, "vgg16" (the paper's) or another name of
            :func:`wwbl.networks.backbones.available_backbones`, cut at stride 8.
        output_init: the last 1→1 conv's initial weights: "pytorch" (its default, random signs, as the
            released code) or "positive" (their absolute values, so the map starts rising with the one
            ReLU channel before it; with falling weights the map's maximum is the plateau where that
            channel is dead). An initialisation only, so not part of :meth:`config`. Measured on the
            shapes world's val split (configs/shapes/g.yaml, 5 epochs): "positive" kept its signs and
            reached 35.4 % box accuracy (the shipped "pytorch" g: 30.3 %) but only 53.8–58.1 % pointing
            (shipped: 69.7 %), so the shipped g keeps the default.
    """

    def __init__(
        self,
        text_dim: int = 512,
        decoder_channels: int | None = None,
        vgg_width_div: int = 1,
        pretrained_backbone: bool = True,
        input_norm: str = "reference",
        backbone_weights: str | None = None,
        backbone: str = "vgg16",
        output_init: str = "pytorch",
    ) -> None:
        super().__init__()
        if output_init not in OUTPUT_INITS:
            raise ValueError(f"output_init must be one of {OUTPUT_INITS}, got {output_init!r}")
        decoder_channels = decoder_channels or text_dim
        self._config = {"text_dim": text_dim, "decoder_channels": decoder_channels,
                        "vgg_width_div": vgg_width_div, "input_norm": input_norm, "backbone": backbone}
        self.text_dim = text_dim
        self.normalize = InputNormalize(input_norm)
        self.encoder, encoder_channels = build_stride8_encoder(backbone, pretrained_backbone, vgg_width_div,
                                                               backbone_weights)
        self.bottleneck = BottleneckBlock(encoder_channels, text_dim)
        self.up0 = UpBlock(text_dim, decoder_channels)
        self.up1 = UpBlock(decoder_channels, 1, output_block=True)
        if output_init == "positive":
            with torch.no_grad():
                self.up1[-1].weight.abs_()

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (without ``pretrained_backbone`` and ``output_init``)."""
        return dict(self._config)

    def similarity_map(self, features: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Per-pixel cosine between ``features`` (B×C×h×w) and the text (B×C) → B×1×h×w."""
        z_t = F.normalize(text_emb, dim=-1)
        z_i = F.normalize(features, dim=1)
        return torch.einsum("bchw,bc->bhw", z_i, z_t).unsqueeze(1)

    def encode_image(self, images01: torch.Tensor) -> torch.Tensor:
        """The text-independent part: bottleneck features B×text_dim×h×w (stride 8)."""
        return self.bottleneck(self.encoder(self.normalize(images01)))

    def decode(self, features: torch.Tensor, text_emb: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
        """Gate ``features`` (T×C×h×w) by their cosine with ``text_emb`` (T×C) → T×H×W maps in [0, 1]."""
        gated = features * self.similarity_map(features, text_emb.to(features.dtype))
        logits = self.up1(self.up0(gated))
        logits = F.interpolate(logits, size=size_hw, mode="bilinear", align_corners=True)
        return torch.sigmoid(logits).squeeze(1)

    def forward(self, images01: torch.Tensor, text_emb: torch.Tensor,
                image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Maps in [0, 1] at the input size for B×3×H×W images in [0, 1].

        Without ``image_index`` the texts pair with the images (``text_emb`` B×D → B×H×W). With
        ``image_index`` (T long) text t grounds in image ``image_index[t]`` (``text_emb`` T×D →
        T×H×W); the image encoder then runs once per image, however many phrases it has.
        """
        expected = images01.shape[0] if image_index is None else image_index.shape[0]
        if text_emb.dim() != 2 or text_emb.shape != (expected, self.text_dim):
            raise ValueError(f"text_emb must be {expected}×{self.text_dim} (one row per "
                             f"{'image' if image_index is None else 'image_index entry'}), got {tuple(text_emb.shape)}")
        features = self.encode_image(images01)
        if image_index is not None:
            features = features[image_index]
        return self.decode(features, text_emb, images01.shape[-2:])
