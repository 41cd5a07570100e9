"""The Python facade: ``model = wwbl.load(checkpoint)``; ``model.ground(image, phrases)``; ``model.detect(image)``.

Images may be file paths, PIL images (any mode), ``H×W``/``H×W×C`` arrays or ``C×H×W`` tensors
(:func:`wwbl.images.to_tensor01` says which dtypes); anything else is an ImageLoadError. Images larger
than the working resolution (``max_side``) are processed downscaled and their results mapped back to
the original frame. BLIP is only loaded on the first :meth:`WWbLModel.detect`, so grounding works
without captioner weights.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from wwbl.box_rules import BoxRule
from wwbl.clip import ClipSpec
from wwbl.export import read_export_config
from wwbl.extractors.base import HeatmapExtractor, build_extractor
from wwbl.defaults import DEFAULT_CAPTIONER, MAX_SIDE
from wwbl.images import working_copy
from wwbl.inference.captioner import BlipCaptioner
from wwbl.inference.options import WWbLOptions
from wwbl.inference.pipeline import GroundingPipeline, IterativeWWbL, WWbLPipeline, as_pil
from wwbl.inference.results import DetectionResult, GroundingResult, IterativeResult, in_frame
from wwbl.inference.scoring import Scoring


class WWbLModel:
    """A heatmap source plus the lazily loaded captioner, with grounding and detection entry points.

    ``boxes`` is the heatmap → boxes rule of grounding and detection; ``options`` the WWbL pipeline's
    proposals, caption decoding (applied when the captioner is loaded from an id or folder) and
    clustering; ``scoring`` the boxes' detection confidence threshold and top-k
    (:mod:`wwbl.inference.scoring`; ``None``: the rule's own scores, nothing dropped); ``max_side`` the
    working resolution (`wwbl.defaults.MAX_SIDE`; ``None``: none): an image whose longer side is larger
    is processed on a copy downscaled to it, and its boxes (absolute ``xyxy``) and heatmaps are returned
    in the original image's frame.
    """

    def __init__(self, heatmaps: HeatmapExtractor, captioner: BlipCaptioner | str = DEFAULT_CAPTIONER,
                 boxes: BoxRule | None = None, options: WWbLOptions | None = None,
                 scoring: Scoring | None = Scoring(), max_side: int | None = MAX_SIDE) -> None:
        if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
            raise ValueError(f"max_side must be a positive whole number of pixels or None, got {max_side!r}")
        self.max_side = max_side
        self.heatmaps = heatmaps
        self.boxes = boxes or BoxRule()
        self.options = options or WWbLOptions()
        self.scoring = scoring
        self.grounding = GroundingPipeline(heatmaps, self.boxes, scoring)
        self._captioner = captioner
        self._wwbl: WWbLPipeline | None = None

    @property
    def captioner(self) -> BlipCaptioner:
        return self.load_captioner()

    def load_captioner(self) -> BlipCaptioner:
        """The captioner, loaded on first use (raises MissingResourceError without weights)."""
        if isinstance(self._captioner, str):
            self._captioner = BlipCaptioner.from_pretrained(self._captioner, self.heatmaps.device, self.options.caption)
        return self._captioner

    @property
    def wwbl(self) -> WWbLPipeline:
        if self._wwbl is None:
            self._wwbl = WWbLPipeline(self.heatmaps, self.captioner, proposals=self.options.proposals,
                                      boxes=self.boxes, cluster_threshold=self.options.cluster_threshold,
                                      min_cluster_size=self.options.min_cluster_size, scoring=self.scoring)
        return self._wwbl

    def ground(self, image: Any, phrases: str | Sequence[str]) -> GroundingResult:
        """WSG: heatmaps and boxes of ``phrases`` (one string or several) in ``image``."""
        return self.ground_batch([image], [phrases])[0]

    def ground_batch(self, images: Sequence[Any], phrases: Sequence[str | Sequence[str]]) -> list[GroundingResult]:
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        return self._at_working_size(lambda work: self.grounding(work, phrases), images)

    def detect(self, image: Any) -> DetectionResult:
        """WWbL: what is where in ``image``, from the image alone (Algorithm 1)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Any]) -> list[DetectionResult]:
        return self._at_working_size(self.wwbl, images)

    def detect_iterative(self, images: Sequence[Any], **options: Any) -> list[IterativeResult]:
        """The selective-search-free variant (Appendix A); options as :class:`IterativeWWbL`."""
        return self._at_working_size(IterativeWWbL(self.heatmaps, self.captioner, **options), images)

    def _at_working_size(self, run: Callable[[list[Image.Image]], list], images: Sequence[Any]) -> list:
        """``run`` on the images' working copies (`max_side`), its results mapped to the original frames."""
        pictures = [as_pil(image) for image in images]
        sizes = [(picture.height, picture.width) for picture in pictures]
        work = [working_copy(picture, self.max_side) for picture in pictures]
        del pictures  # the full-size copies are not needed while the models run
        return [in_frame(result, size) for result, size in zip(run(work), sizes)]


def _build_clip(clip: Any, clip_pretrained: str | None, clip_checkpoint: str | None, device: str | torch.device):
    """A FrozenCLIP from an instance or a name; no name means OpenAI's ViT-B/32 weights (never a random CLIP)."""
    if clip is None:
        clip, clip_pretrained = "ViT-B-32", clip_pretrained or (None if clip_checkpoint else "openai")
    if isinstance(clip, str):
        return ClipSpec(clip, clip_pretrained, clip_checkpoint).build(device)
    return clip.to(device)


def _clip_for_export(checkpoint: str, clip: Any, clip_pretrained: str | None, clip_checkpoint: str | None,
                     device: str | torch.device):
    """The CLIP for an exported g: the export's own spec, with any field the caller gives overriding it
    (None lets the g extractor build the export's CLIP itself)."""
    if clip is not None and not isinstance(clip, str):
        return clip.to(device)
    if clip is None and clip_pretrained is None and clip_checkpoint is None:
        return None
    spec = read_export_config(checkpoint)["clip"]
    model = clip or spec["model"]
    if model == spec["model"] and clip_pretrained is None and clip_checkpoint is None:
        clip_pretrained, clip_checkpoint = spec.get("pretrained"), spec.get("checkpoint")
    return _build_clip(model, clip_pretrained, clip_checkpoint, device)


def load(checkpoint: str | Path | None = None, clip: Any = None, clip_pretrained: str | None = None,
         clip_checkpoint: str | None = None, captioner: BlipCaptioner | str = DEFAULT_CAPTIONER, method: str = "g",
         device: str | torch.device = "cpu", boxes: BoxRule | None = None, options: WWbLOptions | None = None,
         scoring: Scoring | None = Scoring(), max_side: int | None = MAX_SIDE,
         **extractor_options: Any) -> WWbLModel:
    """Build a :class:`WWbLModel`.

    Args:
        checkpoint: an exported network g folder (``python -m wwbl.export``); required for ``method="g"``.
        clip: a ``FrozenCLIP`` or an open_clip model name. For g, ``None`` rebuilds the CLIP named in the
            export; for other methods ``None`` means ``ViT-B-32`` with the ``openai`` weights (or the
            ``clip_checkpoint``). A name needs ``clip_pretrained`` (a tag, or ``"random"`` for untrained
            weights) or ``clip_checkpoint``; without either ``FrozenCLIP`` raises.
        captioner: a ``BlipCaptioner``, a Hugging Face id or a local BLIP folder (loaded on first ``detect``).
        method: ``"g"`` or any registered training-free extractor (``wwbl.extractors.available_extractors()``).
        boxes: the heatmap → boxes rule (default ``BoxRule()``: the paper's WSG rule).
        options: the WWbL pipeline's proposals, caption decoding and clustering (default: the paper's).
        scoring: which boxes to keep by detection confidence, e.g. ``Scoring(threshold=0.5, top_k=3)``
            (default: all, each scored by its confidence; ``None``: the box rule's own scores).
        max_side: the working resolution (default `wwbl.defaults.MAX_SIDE`, 1600; ``None``: none): larger
            images are processed downscaled so that their longer side is ``max_side``, and results are
            mapped back to the original frame.
        extractor_options: passed to the extractor (e.g. ``text_prefix``, ``images_per_batch``).
    """
    if method == "g":
        if checkpoint is None:
            raise ValueError("method 'g' needs checkpoint=<exported network g folder>; or choose a training-free "
                             "method, e.g. method='gae'")
        built = _clip_for_export(str(checkpoint), clip, clip_pretrained, clip_checkpoint, device)
        extractor = build_extractor("g", clip=built, network=str(checkpoint), **extractor_options)
    else:
        extractor = build_extractor(method, clip=_build_clip(clip, clip_pretrained, clip_checkpoint, device),
                                    **extractor_options)
    extractor = extractor.to(device)
    return WWbLModel(extractor, captioner, boxes, options, scoring, max_side)
