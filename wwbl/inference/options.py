"""One set of settings per knob, shared by every door: ``infer.py``, ``wwbl.load`` and
``python -m wwbl.evaluation``.

* :class:`WWbLOptions` — the WWbL pipeline's settings (Algorithm 1): proposals, captioning and
  caption clustering. Each default is written once, in the class that owns it
  (:class:`ProposalGenerator`, :class:`CaptionSettings`, :mod:`wwbl.inference.community`).
* ``box_rule_from_args``, ``scoring_from_args`` and ``pipeline_options_from_args`` read back the flags that
  :mod:`wwbl.cli` adds to every CLI (built without torch, so parsing answers at once).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from wwbl.box_rules import BoxRule, RuleName
from wwbl.defaults import CLUSTER_THRESHOLD, MIN_CLUSTER_SIZE, REFERENCE_CROP_SIZE
from wwbl.inference.captioner import CaptionSettings
from wwbl.inference.proposals import ProposalGenerator
from wwbl.inference.scoring import Scoring


@dataclass
class WWbLOptions:
    """Proposals (line 2), BLIP decoding (line 3) and community detection (line 5) of WWbL.

    Speed: BLIP captioning every proposal is >95 % of Algorithm 1. Exact savings are on by default
    (identical crops captioned once, ``caption.share_identical_crops``; batching in
    ``caption.chunk_size`` chunks with an out-of-memory back-off). Options that trade output for
    speed are off by default: ``proposals.dedup_iou`` (``--proposal-dedup-iou``),
    ``proposals.max_proposals`` (``--max-proposals``) and ``caption.num_beams`` (``--num-beams``).
    """

    proposals: ProposalGenerator = field(default_factory=ProposalGenerator)
    caption: CaptionSettings = field(default_factory=CaptionSettings)
    cluster_threshold: float = CLUSTER_THRESHOLD
    min_cluster_size: int = MIN_CLUSTER_SIZE


def box_rule_from_args(args: argparse.Namespace, rule: RuleName = "wsg") -> BoxRule:
    """The :class:`BoxRule` named by the flags of :func:`add_box_rule_arguments`."""
    return BoxRule(rule=rule, mode=args.box_mode, threshold=args.box_threshold, nms_iou=args.box_nms_iou)


def scoring_from_args(args: argparse.Namespace) -> Scoring:
    """The :class:`Scoring` named by the flags of :func:`add_score_arguments`."""
    return Scoring(threshold=args.score_threshold, top_k=args.top_k, view=args.score_view,
                   cross_phrase_iou=args.cross_phrase_iou)


def pipeline_options_from_args(args: argparse.Namespace) -> WWbLOptions:
    """The :class:`WWbLOptions` named by the flags of :func:`add_pipeline_arguments`."""
    caption = CaptionSettings(num_beams=args.num_beams, max_length=args.max_caption_length,
                              chunk_size=args.caption_chunk,
                              reference_crop_size=REFERENCE_CROP_SIZE if args.reference_crops else None,
                              share_identical_crops=not args.caption_repeated_crops)
    proposals = ProposalGenerator(encoding=args.ss_encoding, dedup_iou=args.proposal_dedup_iou,
                                  max_proposals=args.max_proposals, min_area_ratio=args.min_proposal_area)
    return WWbLOptions(proposals=proposals, caption=caption, cluster_threshold=args.cluster_threshold,
                       min_cluster_size=args.min_cluster_size)
