"""Inference: proposals, BLIP captions, caption clustering, the WSG / WWbL
pipelines (paper §3.1, Algorithm 1, Appendix A) and the ``load`` facade."""
from wwbl.inference.api import WWbLModel, load
from wwbl.inference.captioner import BlipCaptioner, CaptionSettings
from wwbl.inference.community import community_detection, representatives
from wwbl.inference.pipeline import GroundingPipeline, IterativeWWbL, WWbLPipeline
from wwbl.inference.proposals import ProposalGenerator
from wwbl.inference.results import DetectionResult, GroundingResult, IterativeResult
from wwbl.inference.scoring import Scoring

__all__ = [
    "BlipCaptioner", "CaptionSettings", "DetectionResult", "GroundingPipeline", "GroundingResult",
    "IterativeResult", "IterativeWWbL", "ProposalGenerator", "Scoring", "WWbLModel", "WWbLPipeline",
    "community_detection", "load", "representatives",
]
