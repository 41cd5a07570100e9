"""Inference: heatmap → boxes, proposals, BLIP captions, caption clustering, the WSG / WWbL
pipelines (paper §3.1, Algorithm 1, Appendix A) and the ``load`` facade."""
from wwbl.inference.api import WWbLModel, load
from wwbl.inference.captioner import BlipCaptioner, CaptionSettings
from wwbl.inference.community import community_detection, representatives
from wwbl.inference.heatmap_boxes import boxes_for_phrases, wsg_boxes, wsol_box
from wwbl.inference.pipeline import BoxRule, GroundingPipeline, IterativeWWbL, WWbLPipeline
from wwbl.inference.proposals import ProposalGenerator
from wwbl.inference.results import DetectionResult, GroundingResult, IterativeResult

__all__ = [
    "BlipCaptioner", "BoxRule", "CaptionSettings", "DetectionResult", "GroundingPipeline", "GroundingResult",
    "IterativeResult", "IterativeWWbL", "ProposalGenerator", "WWbLModel", "WWbLPipeline", "boxes_for_phrases",
    "community_detection", "load", "representatives", "wsg_boxes", "wsol_box",
]
