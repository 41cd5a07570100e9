"""Evaluation of wwbl: the papers' metrics (torchmetrics), benchmark loaders in their publishers'
layouts, the evaluation command (``python -m wwbl.evaluation``) and the papers' table writers.

Heavy pieces (extractors, CLIP) are imported only by the command, so the metrics can be used
(e.g. by the LightningModule's validation) without them.
"""
from wwbl.evaluation.metrics import (
    AccAtIoU,
    BoxAccuracy,
    GTKnownLoc,
    MeanIoUSweep,
    PointingAccuracy,
    PxAP,
    TopKLoc,
    WWbLMetric,
    argmax_points,
    box_ious,
    nearest_captions,
    points_in_boxes,
)

__all__ = ["AccAtIoU", "BoxAccuracy", "GTKnownLoc", "MeanIoUSweep", "PointingAccuracy", "PxAP", "TopKLoc",
           "WWbLMetric", "argmax_points", "box_ious", "nearest_captions", "points_in_boxes"]
