"""The one box format of wwbl and converters at the edges.

Inside wwbl a box is absolute-pixel `xyxy` (float) in the original image frame and every box has
a score. COCO `xywh` and normalised coordinates exist only at input/output boundaries.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Detections:
    """Boxes (N×4, xyxy absolute pixels, original image frame), their scores (N) and optional phrases."""

    boxes: Tensor
    scores: Tensor
    phrases: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1)
        if self.boxes.shape[0] != self.scores.shape[0]:
            raise ValueError(f"{self.boxes.shape[0]} boxes but {self.scores.shape[0]} scores")
        if self.phrases is not None and len(self.phrases) != self.boxes.shape[0]:
            raise ValueError(f"{self.boxes.shape[0]} boxes but {len(self.phrases)} phrases")

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @classmethod
    def empty(cls) -> "Detections":
        return cls(torch.zeros(0, 4), torch.zeros(0))

    def to_dicts(self) -> list[dict]:
        """JSON-able records: {"box": [x1, y1, x2, y2], "score": s, "phrase": p?}."""
        records = []
        for i, (box, score) in enumerate(zip(self.boxes.tolist(), self.scores.tolist())):
            record = {"box": [round(v, 2) for v in box], "score": round(score, 5)}
            if self.phrases is not None:
                record["phrase"] = self.phrases[i]
            records.append(record)
        return records


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
