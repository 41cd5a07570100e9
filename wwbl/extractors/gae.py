"""Chefer et al.'s relevancy ("GAE", generic attention explainability) as an extractor (REFERENCE.md E§6).

The same map as `FrozenCLIP.relevancy`: per pair, the positive gradient-weighted attention of the
blocks from `start_layer` on, rolled out and read at the class token's row. `start_layer=-1`
(default) uses the last block only, as the notebook's HEAD and the WWbL reference do;
`start_layer=0` is the original all-layer rollout.

`relevancy_maps` runs the text-independent blocks once per image and only the explained blocks
per (image, phrase) pair, with one backward pass.
"""
from __future__ import annotations

from torch import Tensor

from wwbl.clip import FrozenCLIP
from wwbl.clip.relevancy import relevancy_maps
from wwbl.clip.vit import UnsupportedCLIPError
from wwbl.extractors.base import HeatmapExtractor, register_extractor


@register_extractor("gae")
class GAEExtractor(HeatmapExtractor):
    """Chefer relevancy heatmaps (ViT CLIP only). Option `start_layer`: -1 last block, 0 all blocks."""

    def __init__(self, clip: FrozenCLIP, start_layer: int = -1, **base_options):
        super().__init__(clip, **base_options)
        if not clip.is_vit:
            raise UnsupportedCLIPError("gae needs a ViT CLIP (attention maps); got a ResNet image tower")
        if not -clip.vit.num_layers <= start_layer < clip.vit.num_layers:
            raise ValueError(f"start_layer must index one of the {clip.vit.num_layers} blocks, got {start_layer}")
        self.start_layer = start_layer

    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        return relevancy_maps(self.clip.vit, images, text_emb, self.clip.logit_scale, self.start_layer, image_index)
