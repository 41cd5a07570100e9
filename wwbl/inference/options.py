"""One set of settings per knob, shared by every door: ``infer.py``, ``wwbl.load`` and
``python -m wwbl.evaluation``.

* :class:`WWbLOptions` — the WWbL pipeline's settings (Algorithm 1): proposals, captioning and
  caption clustering. Each default is written once, in the class that owns it
  (:class:`ProposalGenerator`, :class:`CaptionSettings`, :mod:`wwbl.inference.community`).
* ``add_box_rule_arguments`` / ``box_rule_from_args`` and ``add_pipeline_arguments`` /
  ``pipeline_options_from_args`` — the same command-line flags for both CLIs.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from wwbl.box_rules import BOX_MODES, WSG_THRESHOLD, WSOL_THRESHOLD, BoxRule, RuleName
from wwbl.inference.captioner import CaptionSettings
from wwbl.inference.community import CLUSTER_THRESHOLD, MIN_CLUSTER_SIZE
from wwbl.inference.proposals import ProposalGenerator

# The released code crops captioned regions from its 224² dataset image (``--reference-crops``).
REFERENCE_CROP_SIZE = 224


@dataclass
class WWbLOptions:
    """Proposals (line 2), BLIP decoding (line 3) and community detection (line 5) of WWbL."""

    proposals: ProposalGenerator = field(default_factory=ProposalGenerator)
    caption: CaptionSettings = field(default_factory=CaptionSettings)
    cluster_threshold: float = CLUSTER_THRESHOLD
    min_cluster_size: int = MIN_CLUSTER_SIZE


def add_box_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """``--box-mode``, ``--box-threshold`` and ``--box-nms-iou`` (read back by :func:`box_rule_from_args`)."""
    defaults = BoxRule()
    parser.add_argument("--box-mode", default=defaults.mode, choices=BOX_MODES,
                        help="heatmap→box rule: the paper's or the released code's (WSG: union, NMS 0.05 on "
                             "(x, y, w, h); WSOL: largest contour of the cubehelix gray)")
    parser.add_argument("--box-threshold", type=float, default=defaults.threshold,
                        help=f"box-rule threshold on the min-max normalised map (default: the rule's, "
                             f"{WSG_THRESHOLD} WSG, {WSOL_THRESHOLD} WSOL)")
    parser.add_argument("--box-nms-iou", type=float, default=defaults.nms_iou,
                        help="WSG rule's NMS IoU (default: 0.3 paper, 0.05 reference)")


def box_rule_from_args(args: argparse.Namespace, rule: RuleName = "wsg") -> BoxRule:
    """The :class:`BoxRule` named by the flags of :func:`add_box_rule_arguments`."""
    return BoxRule(rule=rule, mode=args.box_mode, threshold=args.box_threshold, nms_iou=args.box_nms_iou)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The WWbL pipeline's flags (read back by :func:`pipeline_options_from_args`)."""
    proposals, caption = ProposalGenerator, CaptionSettings  # their class-level field defaults
    parser.add_argument("--ss-encoding", choices=["reference", "uint8_bgr"], default=proposals.encoding,
                        help="selective-search input encoding")
    parser.add_argument("--max-proposals", type=int, default=proposals.max_proposals,
                        help="cap on proposals per image (default: none)")
    parser.add_argument("--cluster-threshold", type=float, default=CLUSTER_THRESHOLD,
                        help="community-detection cosine threshold")
    parser.add_argument("--min-cluster-size", type=int, default=MIN_CLUSTER_SIZE)
    parser.add_argument("--num-beams", type=int, default=caption.num_beams)
    parser.add_argument("--max-caption-length", type=int, default=caption.max_length)
    parser.add_argument("--caption-chunk", type=int, default=caption.chunk_size, help="crops per BLIP batch")
    parser.add_argument("--reference-crops", action="store_true",
                        help=f"crop proposals from the image resized to {REFERENCE_CROP_SIZE}² as the released code "
                             "(default: from the original image)")


def pipeline_options_from_args(args: argparse.Namespace) -> WWbLOptions:
    """The :class:`WWbLOptions` named by the flags of :func:`add_pipeline_arguments`."""
    caption = CaptionSettings(num_beams=args.num_beams, max_length=args.max_caption_length,
                              chunk_size=args.caption_chunk,
                              reference_crop_size=REFERENCE_CROP_SIZE if args.reference_crops else None)
    return WWbLOptions(proposals=ProposalGenerator(encoding=args.ss_encoding, max_proposals=args.max_proposals),
                       caption=caption, cluster_threshold=args.cluster_threshold,
                       min_cluster_size=args.min_cluster_size)
