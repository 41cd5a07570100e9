"""Inference pipelines: WSG grounding, WWbL (Algorithm 1) and its iterative variant (Appendix A).

Every pipeline takes a pluggable heatmap source — any :class:`wwbl.extractors.base.HeatmapExtractor`
(network g wrapped as an extractor, or a training-free method, as in the paper's Table 7) — and
works on a list of images at once: proposals are computed per image, but captioning, text encoding
and heatmaps are batched across all images.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from wwbl.box_rules import BoxRule, box_means
from wwbl.boxes import Detections, to_coco_xywh
from wwbl.extractors.base import HeatmapExtractor
from wwbl.images import load_image, to_rgb, to_tensor01
from wwbl.inference.captioner import BlipCaptioner
from wwbl.inference.community import CLUSTER_THRESHOLD, MIN_CLUSTER_SIZE, community_detection, representatives
from wwbl.inference.proposals import ProposalGenerator
from wwbl.inference.results import DetectionResult, GroundingResult, IterativeResult
from wwbl.inference.scoring import Scoring, heatmaps_for, rescore

TextEncoder = Callable[[Sequence[str]], torch.Tensor]


def as_pil(image: object) -> Image.Image:
    """Any supported image input (path, PIL, H×W×C array, 3×H×W [0,1] tensor) → RGB PIL image;
    anything else is an ImageLoadError saying what was expected."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)  # raises ImageLoadError naming the file
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()  # one that needs grad, or lives on a GPU, is read as its values
    array = (to_tensor01(image).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


def _clean_phrases(phrases: Sequence[str] | str) -> list[str]:
    phrases = [phrases] if isinstance(phrases, str) else list(phrases)
    if not phrases:
        raise ValueError("no phrases to ground: give at least one")
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase.strip():
            raise ValueError(f"every phrase must be a non-empty string, got {phrase!r}")
    return [p.strip() for p in phrases]


class GroundingPipeline:
    """WSG: images + phrases → a heatmap per phrase → boxes, scored by their detection confidence
    (:mod:`wwbl.inference.scoring`) and kept by ``scoring``; ``scoring=None`` keeps the rule's own scores."""

    def __init__(self, heatmaps: HeatmapExtractor, boxes: BoxRule | None = None,
                 scoring: Scoring | None = Scoring()) -> None:
        self.heatmaps = heatmaps
        self.boxes = boxes or BoxRule()
        self.scoring = scoring

    def __call__(self, images: Sequence[object], phrases: Sequence[Sequence[str] | str]) -> list[GroundingResult]:
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        pil = [as_pil(image) for image in images]
        phrase_lists = [_clean_phrases(p) for p in phrases]
        maps, ranges = heatmaps_for(self.heatmaps, self.scoring, pil, phrase_lists)
        dets = rescore(self.heatmaps, self.scoring, pil, phrase_lists, maps, ranges,
                       [self.boxes(hm, plist) for plist, hm in zip(phrase_lists, maps)])
        return [GroundingResult((img.height, img.width), plist, hm, d)
                for img, plist, hm, d in zip(pil, phrase_lists, maps, dets)]


class WWbLPipeline:
    """What is where by looking (paper Algorithm 1), for a list of images.

    Args:
        heatmaps: the heatmap source M = g(I, Z) (line 8).
        captioner: BLIP (line 3).
        text_encoder: E_t (line 4), phrases → L2-normalised embeddings; defaults to the heatmap
            source's CLIP text encoder. Captions are encoded without any prompt prefix, as the
            reference does.
        proposals: selective search + grid (line 2).
        boxes: the box extractor BE (line 9).
        cluster_threshold, min_cluster_size: Cd's parameters (line 5; the paper's 0.85 and 2).
        scoring: the boxes' detection confidence and what it keeps (``None``: the rule's own scores).
    """

    def __init__(self, heatmaps: HeatmapExtractor, captioner: BlipCaptioner, text_encoder: TextEncoder | None = None,
                 proposals: ProposalGenerator | None = None, boxes: BoxRule | None = None,
                 cluster_threshold: float = CLUSTER_THRESHOLD, min_cluster_size: int = MIN_CLUSTER_SIZE,
                 scoring: Scoring | None = Scoring()) -> None:
        self.heatmaps = heatmaps
        self.captioner = captioner
        self.text_encoder = text_encoder or heatmaps.clip.encode_text
        self.proposals = proposals or ProposalGenerator()
        self.boxes = boxes or BoxRule()
        self.cluster_threshold = cluster_threshold
        self.min_cluster_size = min_cluster_size
        self.scoring = scoring

    def __call__(self, images: Sequence[object]) -> list[DetectionResult]:
        pil = [as_pil(image) for image in images]
        proposals = self._propose(pil)                                            # line 2
        captions = self.captioner.caption_regions(pil, proposals)                 # line 3
        clusters, phrases = self.cluster_captions(captions)                       # lines 4–5
        maps, ranges = heatmaps_for(self.heatmaps, self.scoring, pil, phrases)    # line 8, all clusters at once
        dets = rescore(self.heatmaps, self.scoring, pil, phrases, maps, ranges,   # lines 9–10
                       [self.boxes(hm, plist) for plist, hm in zip(phrases, maps)])
        return [DetectionResult((img.height, img.width), plist, hm, d, proposals=props, captions=caps, clusters=groups)
                for img, plist, hm, d, props, caps, groups in zip(pil, phrases, maps, dets, proposals, captions, clusters)]

    def _propose(self, images: list[Image.Image]) -> list[torch.Tensor]:
        """Proposals of every image; OpenCV releases the GIL, so images run in parallel threads."""
        if len(images) < 2:
            return [self.proposals(image) for image in images]
        with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
            return list(pool.map(self.proposals, images))

    def cluster_captions(self, captions: list[list[str]]) -> tuple[list[list[list[int]]], list[list[str]]]:
        """Per image: the caption clusters (indices) and each cluster's representative caption."""
        usable = [[i for i, c in enumerate(caps) if c.strip()] for caps in captions]
        flat = [captions[k][i] for k, idx in enumerate(usable) for i in idx]
        embeddings = self.text_encoder(flat).float().cpu() if flat else torch.zeros(0, 1)
        per_image = embeddings.split([len(idx) for idx in usable])
        all_clusters, all_phrases = [], []
        for caps, idx, emb in zip(captions, usable, per_image):
            local = community_detection(emb, self.cluster_threshold, self.min_cluster_size) if len(idx) else []
            chosen = representatives(emb, local)
            all_clusters.append([[idx[i] for i in group] for group in local])
            all_phrases.append([caps[idx[i]].strip() for i in chosen])
        return all_clusters, all_phrases


class IterativeWWbL:
    """The selective-search-free variant (paper Appendix A; the reference's ver1 "algorithm 2", REFERENCE.md W§7.2).

    Per image, up to ``max_iterations`` steps, batched across the images still running:

    1. caption the whole, progressively blacked-out image;
    2. heatmap of that caption, with the boxes already found zeroed;
    3. a box from the heatmap (default: the released ``generate_bbox`` at threshold 0.4), and a
       caption of that crop;
    4. confidence = CLIP cosine between the crop caption and the image caption.

    A step is kept if it is one of the first ``always_keep`` (2) steps, or if confidence >
    ``stop_threshold`` (0.6), its IoU with every earlier box < ``max_iou`` (0.5), and the mean heatmap
    inside the box > ``min_box_heat`` (0.1); otherwise the image stops. A kept box is blacked out in
    the image. The step's phrase is the image caption that produced the heatmap.
    """

    def __init__(self, heatmaps: HeatmapExtractor, captioner: BlipCaptioner, text_encoder: TextEncoder | None = None,
                 boxes: BoxRule | None = None, max_iterations: int = 15, stop_threshold: float = 0.6,
                 max_iou: float = 0.5, min_box_heat: float = 0.1, always_keep: int = 2) -> None:
        self.heatmaps = heatmaps
        self.captioner = captioner
        self.text_encoder = text_encoder or heatmaps.clip.encode_text
        self.boxes = boxes or BoxRule(mode="reference", threshold=0.4)
        self.max_iterations = max_iterations
        self.stop_threshold = stop_threshold
        self.max_iou = max_iou
        self.min_box_heat = min_box_heat
        self.always_keep = always_keep

    def __call__(self, images: Sequence[object]) -> list[IterativeResult]:
        current = [np.array(as_pil(image)) for image in images]
        found: list[list[tuple]] = [[] for _ in images]  # per image: (phrase, box, score, heatmap, crop caption, conf)
        active = list(range(len(images)))
        for step in range(self.max_iterations):
            if not active:
                break
            active = self._step(step, active, current, found)
        return [self._result(array.shape[:2], steps) for array, steps in zip(current, found)]

    def _step(self, step: int, active: list[int], current: list[np.ndarray], found: list[list[tuple]]) -> list[int]:
        pil = [Image.fromarray(current[k]) for k in active]
        captions = [c.strip() for c in self.captioner.caption(pil)]
        running = [(k, img, cap) for k, img, cap in zip(active, pil, captions) if cap]
        if not running:
            return []
        maps = self.heatmaps.heatmaps([img for _, img, _ in running], [[cap] for _, _, cap in running])
        candidates = []
        for (k, img, cap), hm in zip(running, maps):
            heat = self._zero_found(hm[0], found[k])
            dets = self.boxes(heat[None], [cap])
            if len(dets):
                best = int(dets.scores.argmax())
                candidates.append((k, img, cap, heat, dets.boxes[best], dets.scores[best]))
        crop_caps = self.captioner.caption_regions([c[1] for c in candidates], [c[4][None] for c in candidates])
        confidences = self._agreement([c[2] for c in candidates], [caps[0] for caps in crop_caps])
        still_active = []
        for (k, _, cap, heat, box, score), crop_cap, conf in zip(candidates, crop_caps, confidences):
            if self._keep(step, box, heat, float(conf), found[k]):
                found[k].append((cap, box, float(score), heat, crop_cap[0], float(conf)))
                self._black_out(current[k], box)
                still_active.append(k)
        return still_active

    @staticmethod
    def _zero_found(heatmap: torch.Tensor, steps: list[tuple]) -> torch.Tensor:
        heat = heatmap.clone()
        for _, box, *_ in steps:
            x0, y0, x1, y1 = (int(v) for v in box.round().tolist())
            heat[max(y0, 0):y1, max(x0, 0):x1] = 0
        return heat

    @staticmethod
    def _black_out(array: np.ndarray, box: torch.Tensor) -> None:
        x0, y0, x1, y1 = (int(v) for v in box.round().tolist())
        array[max(y0, 0):y1, max(x0, 0):x1] = 0

    def _agreement(self, image_captions: list[str], crop_captions: list[str]) -> torch.Tensor:
        """CLIP cosine of each (image caption, crop caption) pair; 0 where the crop caption is empty."""
        usable = [i for i, c in enumerate(crop_captions) if c.strip()]
        scores = torch.zeros(len(crop_captions))
        if usable:
            a = self.text_encoder([image_captions[i] for i in usable]).float().cpu()
            b = self.text_encoder([crop_captions[i].strip() for i in usable]).float().cpu()
            scores[usable] = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        return scores

    def _keep(self, step: int, box: torch.Tensor, heat: torch.Tensor, conf: float, steps: list[tuple]) -> bool:
        if step < self.always_keep:
            return True
        earlier = torch.stack([s[1] for s in steps]) if steps else torch.zeros(0, 4)
        overlap = float(box_iou(box[None], earlier).max()) if len(earlier) else 0.0
        xywh = to_coco_xywh(box.round().long())[None]
        xywh[:, 2:] = xywh[:, 2:].clamp(min=0)
        heat_in_box = float(box_means(heat.numpy(), xywh.long().numpy())[0])
        return conf > self.stop_threshold and overlap < self.max_iou and heat_in_box > self.min_box_heat

    @staticmethod
    def _result(size_hw: tuple[int, int], steps: list[tuple]) -> IterativeResult:
        phrases = [s[0] for s in steps]
        boxes = torch.stack([s[1] for s in steps]) if steps else torch.zeros(0, 4)
        heatmaps = torch.stack([s[3] for s in steps]) if steps else torch.zeros(0, *size_hw)
        return IterativeResult(tuple(size_hw), phrases, heatmaps,
                               Detections(boxes, torch.tensor([s[2] for s in steps]), phrases),
                               crop_captions=[s[4] for s in steps], confidences=torch.tensor([s[5] for s in steps]))
