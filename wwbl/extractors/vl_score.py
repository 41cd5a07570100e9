"""VL-Score: Score-CAM for CLIP (UCLA CS269 report, papers/001; reference mxuan0/zeroshot-localization, REFERENCE.md E§2).

For a CLIP ResNet with activations ``A = visual.layer4(x)`` (``C×h×w``, the input of the attention
pool):

1. Each channel, bilinearly upsampled to the input (align_corners=True) and min-max normalised
   (``+1e-7``), masks the CLIP-normalised input: ``x_k = x * M_k`` (masked pixels become the mean
   colour). All ``C`` masked images of all images are encoded in large batches (``masked_batch_size``);
   each image's masked embeddings are computed once and shared by all its phrases.
2. ``s_k = cos(E(x_k), t)``; the base score ``b = cos(E(0), t)`` of the all-mean base image.
3. Cap: only channels with ``s_k > b`` count; if none does, the object is declared absent (the map is
   all zeros and `detect` returns no box). Weights ``w = softmax((s_k - b) / T)`` over those channels
   (the code's T = 1 is the default; the report mentions a temperature: ``softmax_temperature``).
4. ``L = ReLU(sum_k w_k A_k)`` on the ``h×w`` grid; the base class min-max normalises it and resizes it
   to the original image.
5. Boxes: threshold at ``box_threshold * max(L)`` (0.6, the report's best; its UI default is 0.65),
   4-connected components, one box per component whose area exceeds ``H*W*min_component_fraction``
   (1/1000). A box's score is the mean map value inside its component (the reference gives none).

Text: each phrase is put into ``prompt_template`` ("an image of a {}." as in the report's evaluation);
with ``synonym_separator`` set (e.g. "," for ImageNet class names) the phrase is split into synonyms
whose embeddings are averaged and re-normalised.

Difference from the reference: the input is the whole image resized to a square (base class), not
CLIP's resize + centre crop, so the map is aligned with non-square images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import label, regionprops
from torch import Tensor

from wwbl.boxes import Detections
from wwbl.clip import FrozenCLIP
from wwbl.extractors.base import HeatmapExtractor, ImageInput, register_extractor


def channel_embeddings(clip: FrozenCLIP, images: Tensor, activations: Tensor, batch_size: int) -> Tensor:
    """L2-normalised CLIP embeddings ``U×C×D`` of every image masked by each of its upsampled channels."""
    num_images, channels = activations.shape[:2]
    size = images.shape[-2:]
    pairs = torch.arange(num_images * channels, device=images.device)
    out = []
    for start in range(0, pairs.numel(), batch_size):
        chunk = pairs[start : start + batch_size]
        image_id, channel = chunk // channels, chunk % channels
        upsampled = F.interpolate(
            activations[image_id, channel][:, None].float(), size=size, mode="bilinear", align_corners=True
        )
        low = upsampled.amin(dim=(-2, -1), keepdim=True)
        masks = (upsampled - low) / (upsampled.amax(dim=(-2, -1), keepdim=True) - low + 1e-7)
        out.append(clip.encode_image_prepared(images[image_id] * masks.to(images.dtype)))
    return torch.cat(out).reshape(num_images, channels, -1)


def score_cam_weights(
    channel_scores: Tensor, base_scores: Tensor, temperature: float = 1.0, cap: bool = True
) -> tuple[Tensor, Tensor]:
    """Channel weights ``P×C`` and a ``P`` bool "present" flag from scores ``P×C`` and base scores ``P``.

    With ``cap``, channels not above the base get weight 0 and a row with none above is absent
    (all-zero weights).
    """
    shifted = (channel_scores - base_scores[:, None]) / temperature
    kept = shifted > 0 if cap else torch.ones_like(shifted, dtype=torch.bool)
    present = kept.any(dim=1)
    weights = shifted.masked_fill(~kept, -float("inf")).softmax(dim=1)
    return torch.where(present[:, None], weights, torch.zeros_like(weights)), present


def component_boxes(heatmap: Tensor, threshold: float, min_area_fraction: float) -> tuple[Tensor, Tensor]:
    """VL-Score's boxes of one ``H×W`` map: ``(K×4`` xyxy pixel edges, ``K`` scores = mean map value inside).

    Pixels ``>= threshold * max`` form 4-connected components; those larger than
    ``H*W*min_area_fraction`` pixels give one box each. An all-zero map gives none.
    """
    peak = float(heatmap.max()) if heatmap.numel() else 0.0
    if peak <= 0:
        return torch.zeros(0, 4), torch.zeros(0)
    values = heatmap.detach().cpu().numpy()
    components = label(values >= threshold * peak, connectivity=1)
    min_area = heatmap.shape[-2] * heatmap.shape[-1] * min_area_fraction
    boxes, scores = [], []
    for region in regionprops(components, intensity_image=values):
        if region.area > min_area:
            top, left, bottom, right = region.bbox
            boxes.append([left, top, right, bottom])
            scores.append(region.intensity_mean)
    return torch.tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4), torch.tensor(scores).float()


@register_extractor("vl_score")
class VLScoreExtractor(HeatmapExtractor):
    """VL-Score heatmaps and boxes (ResNet CLIP only; see the module docstring for each option)."""

    def __init__(
        self,
        clip: FrozenCLIP,
        prompt_template: str = "an image of a {}.",
        synonym_separator: str | None = None,
        softmax_temperature: float = 1.0,
        base_cap: bool = True,
        masked_batch_size: int = 256,
        box_threshold: float = 0.6,
        min_component_fraction: float = 1e-3,
        **base_options,
    ):
        super().__init__(clip, **base_options)
        self.resnet = clip.resnet
        if "{}" not in prompt_template:
            raise ValueError(f"prompt_template needs a '{{}}' placeholder, got {prompt_template!r}")
        if softmax_temperature <= 0 or masked_batch_size < 1 or not 0 < box_threshold <= 1:
            raise ValueError("need softmax_temperature > 0, masked_batch_size >= 1 and 0 < box_threshold <= 1")
        self.prompt_template, self.synonym_separator = prompt_template, synonym_separator
        self.softmax_temperature, self.base_cap = softmax_temperature, base_cap
        self.masked_batch_size = masked_batch_size
        self.box_threshold, self.min_component_fraction = box_threshold, min_component_fraction

    def encode_phrases(self, phrases: list[str]) -> Tensor:
        """Template-filled phrase embeddings, synonyms averaged and re-normalised (``P×D``)."""
        synonyms = [self._synonyms(p) for p in phrases]
        prompts = [self.text_prefix + self.prompt_template.format(s) for group in synonyms for s in group]
        embeddings = self.clip.encode_text(prompts)
        owner = torch.repeat_interleave(torch.arange(len(phrases)), torch.tensor([len(g) for g in synonyms]))
        summed = torch.zeros(len(phrases), embeddings.shape[1], device=embeddings.device)
        summed.index_add_(0, owner.to(embeddings.device), embeddings)
        return F.normalize(summed, dim=-1)

    def _synonyms(self, phrase: str) -> list[str]:
        parts = phrase.split(self.synonym_separator) if self.synonym_separator else [phrase]
        parts = [p.strip() for p in parts if p.strip()]
        if not parts:
            raise ValueError(f"phrase {phrase!r} has no words to ground")
        return parts

    @torch.no_grad()
    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        used, image_index = image_index.unique(return_inverse=True)  # images without phrases cost nothing
        images = images[used]
        activations = self.resnet.last_stage_features(images).float()
        embeddings = channel_embeddings(self.clip, images, activations, self.masked_batch_size)
        base = self.clip.encode_image_prepared(torch.zeros_like(images[:1]))[0]
        text = text_emb.float()
        channel_scores = torch.einsum("pcd,pd->pc", embeddings[image_index], text)
        weights, _ = score_cam_weights(channel_scores, text @ base, self.softmax_temperature, self.base_cap)
        return torch.einsum("pc,pchw->phw", weights, activations[image_index]).clamp(min=0)

    def detect(self, images: Sequence[ImageInput], phrases: Sequence[Sequence[str]]) -> list[Detections]:
        """Per image, the component boxes of each phrase's heatmap (none where the object is absent)."""
        detections = []
        for maps, names in zip(self.heatmaps(images, phrases), phrases):
            boxes, scores, owners = [], [], []
            for heatmap, name in zip(maps, names):
                phrase_boxes, phrase_scores = component_boxes(heatmap, self.box_threshold, self.min_component_fraction)
                boxes.append(phrase_boxes)
                scores.append(phrase_scores)
                owners.extend([name] * len(phrase_boxes))
            if not owners:
                detections.append(Detections.empty())
                continue
            detections.append(Detections(torch.cat(boxes), torch.cat(scores), owners))
        return detections
