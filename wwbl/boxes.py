"""The one box format of wwbl and converters at the edges.

Inside wwbl a box is absolute-pixel `xyxy` (float) in the original image frame and every box has
a score. COCO `xywh` and normalised coordinates exist only at input/output boundaries, and so do
the layouts of other libraries (`Detections.to_transformers`, `Detections.to_supervision`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class Detections:
    """Boxes (N×4, xyxy absolute pixels, original image frame), their scores (N) and optional phrases.

    ``rule_scores`` (N, optional) keeps the box rule's own score (the mean min-max-normalised heat in
    the box) where ``scores`` holds the detection confidence of :mod:`wwbl.inference.scoring`.
    """

    boxes: Tensor
    scores: Tensor
    phrases: list[str] | None = field(default=None)
    rule_scores: Tensor | None = field(default=None)

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1)
        if self.boxes.shape[0] != self.scores.shape[0]:
            raise ValueError(f"{self.boxes.shape[0]} boxes but {self.scores.shape[0]} scores")
        if self.phrases is not None and len(self.phrases) != self.boxes.shape[0]:
            raise ValueError(f"{self.boxes.shape[0]} boxes but {len(self.phrases)} phrases")
        if self.rule_scores is not None:
            self.rule_scores = torch.as_tensor(self.rule_scores, dtype=torch.float32).reshape(-1)
            if self.rule_scores.shape[0] != self.boxes.shape[0]:
                raise ValueError(f"{self.boxes.shape[0]} boxes but {self.rule_scores.shape[0]} rule scores")

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @classmethod
    def empty(cls) -> "Detections":
        return cls(torch.zeros(0, 4), torch.zeros(0))

    def select(self, index: Tensor | Sequence[int]) -> "Detections":
        """The detections at ``index`` (indices or a boolean mask), every field kept."""
        index = torch.as_tensor(index)
        index = (index.nonzero() if index.dtype == torch.bool else index).long().reshape(-1)
        phrases = None if self.phrases is None else [self.phrases[i] for i in index.tolist()]
        rule = None if self.rule_scores is None else self.rule_scores[index]
        return Detections(self.boxes[index], self.scores[index], phrases, rule)

    def to_dicts(self) -> list[dict]:
        """JSON-able records: {"box": [x1, y1, x2, y2], "score": s, "phrase": p?, "box_score": r?}
        (``box_score``: the box rule's own score, where ``score`` is the detection confidence)."""
        records = []
        for i, (box, score) in enumerate(zip(self.boxes.tolist(), self.scores.tolist())):
            record = {"box": [round(v, 2) for v in box], "score": round(score, 5)}
            if self.phrases is not None:
                record["phrase"] = self.phrases[i]
            if self.rule_scores is not None:
                record["box_score"] = round(float(self.rule_scores[i]), 5)
            records.append(record)
        return records

    def class_ids(self, labels: Sequence[str] | None = None) -> tuple[Tensor, dict[int, str]]:
        """Per box the index of its phrase in ``labels`` (int64), and that index → phrase mapping.

        ``labels`` defaults to the phrases in order of first appearance; pass e.g. a result's
        ``phrases`` for ids that do not depend on which phrases were found. Without phrases every box is "".
        """
        phrases = self.phrases if self.phrases is not None else [""] * len(self)
        names = list(dict.fromkeys(phrases)) if labels is None else list(labels)
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(phrases) - set(index))
        if unknown:
            raise ValueError(f"phrases {unknown} are not among the labels {names}")
        return torch.tensor([index[p] for p in phrases], dtype=torch.int64), dict(enumerate(names))

    def to_transformers(self, labels: Sequence[str] | None = None) -> tuple[dict[str, Tensor], dict[int, str]]:
        """One image's entry of transformers' ``post_process_object_detection`` and its ``id2label``.

        ``{"scores": (N,) float, "labels": (N,) int64, "boxes": (N, 4) absolute xyxy}``; labels as `class_ids`.
        """
        ids, id2label = self.class_ids(labels)
        return {"scores": self.scores.clone(), "labels": ids, "boxes": self.boxes.clone()}, id2label

    def to_supervision(self, labels: Sequence[str] | None = None) -> Any:
        """A ``supervision.Detections``: ``xyxy``, ``confidence``, ``class_id`` (as `class_ids`) and the
        phrases in ``data["class_name"]``, as supervision's own converters fill it."""
        try:
            import supervision  # optional: only this converter needs it
        except ImportError as error:
            raise ImportError("Detections.to_supervision needs supervision: pip install supervision") from error
        ids, id2label = self.class_ids(labels)
        names = np.array([id2label[i] for i in ids.tolist()], dtype=str)
        return supervision.Detections(xyxy=self.boxes.detach().cpu().numpy(),
                                      confidence=self.scores.detach().cpu().numpy(),
                                      class_id=ids.numpy(), data={"class_name": names})


def union_box(boxes: Tensor) -> Tensor:
    """The smallest box containing all boxes (K×4 xyxy -> 4)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        raise ValueError("union of zero boxes is undefined")
    return torch.cat([boxes[:, :2].min(dim=0).values, boxes[:, 2:].max(dim=0).values])


def to_coco_xywh(boxes: Tensor) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)


def from_coco_xywh(boxes: Tensor) -> Tensor:
    """COCO ``[x, y, w, h]`` → ``xyxy`` float32. The sum runs in float64, so Python or float64 inputs
    round once (as ``float32(x + w)``) and float32 inputs give exactly their float32 sum."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], dim=-1).float()


def normalize_boxes(boxes: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Absolute xyxy -> xyxy in [0, 1] relative to width (x) and height (y)."""
    h, w = size_hw
    return torch.as_tensor(boxes, dtype=torch.float32) / torch.tensor([w, h, w, h], dtype=torch.float32)


def denormalize_boxes(boxes: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Normalised xyxy -> absolute-pixel xyxy for an image of height×width `size_hw`."""
    h, w = size_hw
    return torch.as_tensor(boxes, dtype=torch.float32) * torch.tensor([w, h, w, h], dtype=torch.float32)


def clip_boxes(boxes: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Clamp xyxy boxes to the image rectangle [0, W] × [0, H]."""
    h, w = size_hw
    boxes = torch.as_tensor(boxes, dtype=torch.float32).clone()
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h)
    return boxes
