"""Command-line flags shared by the entry points (``infer.py``, ``python -m wwbl.evaluation``,
``python -m wwbl.app``), built from :mod:`wwbl.defaults` with the standard library only.

Parsing never imports torch, so ``--help`` and argument errors answer at once; every value is
checked here (positive counts, device names, a usable output folder) and a bad one is a one-line
argparse error. The flags are read back into objects by :mod:`wwbl.inference.options`.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import NoReturn

import wwbl.defaults as defaults

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: … (see --help)``), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def phrase_text(text: str) -> str:
    """An argparse type: a phrase with some text (an empty one would fail every image, not the command)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"a phrase must hold some text, got {text!r}")
    return text


def max_side(text: str) -> int | None:
    """An argparse type: the working resolution, a whole number ≥ 1 of pixels, or ``none`` (no cap)."""
    return None if text.strip().lower() == "none" else positive_int(text)


def unit_float(text: str) -> float:
    """An argparse type: a number in [0, 1] (thresholds and IoUs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def device_name(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (whether it exists is
    checked by :func:`wwbl.devices.resolve_device` once torch is loaded)."""
    name = text.strip().lower()
    if not DEVICE_PATTERN.match(name):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use auto, cpu, cuda, cuda:N or mps")
    return name


def output_dir(text: str) -> Path:
    """An argparse type: a folder that exists or can be created, and can be written."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write into {str(existing)!r}")
    return path


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_name, default=defaults.DEVICE,
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")


def add_max_side_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-side``: the working resolution (`wwbl.defaults.MAX_SIDE`; read back as ``WWbLModel``'s ``max_side``)."""
    parser.add_argument("--max-side", type=max_side, default=defaults.MAX_SIDE,
                        help="working resolution: an image whose longer side is larger is processed on a copy "
                             "downscaled to this many pixels; boxes and heatmaps are mapped back to the original "
                             "frame ('none': process every image at full size)")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=defaults.PRECISIONS, default=defaults.PRECISIONS[0],
                        help="autocast dtype for the models at inference (maps and boxes stay float32)")


def add_box_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """``--box-mode``, ``--box-threshold`` and ``--box-nms-iou`` (read back by
    :func:`wwbl.inference.options.box_rule_from_args`)."""
    parser.add_argument("--box-mode", default=defaults.BOX_MODES[0], choices=defaults.BOX_MODES,
                        help="heatmap→box rule: the paper's or the released code's (WSG: union, NMS 0.05 on "
                             "(x, y, w, h); WSOL: largest contour of the cubehelix gray)")
    parser.add_argument("--box-threshold", type=unit_float, default=None,
                        help=f"box-rule threshold on the min-max normalised map (default: the rule's, "
                             f"{defaults.WSG_THRESHOLD} WSG, {defaults.WSOL_THRESHOLD} WSOL)")
    nms = defaults.WSG_NMS_IOU
    parser.add_argument("--box-nms-iou", type=unit_float, default=None,
                        help=f"WSG rule's NMS IoU (default: {nms['paper']} paper, {nms['reference']} reference)")


def add_score_arguments(parser: argparse.ArgumentParser, off_by_default: bool = False) -> None:
    """``--score-threshold``, ``--cross-phrase-iou``, ``--top-k`` and ``--score-view`` on the detection
    confidence (read back by :func:`wwbl.inference.options.scoring_from_args`); ``off_by_default``: the
    evaluation's wording."""
    off = ("; without --score-threshold, --cross-phrase-iou or --top-k boxes keep the box rule's score and none "
           "is dropped, so benchmark numbers stay the papers' protocol") if off_by_default else ""
    parser.add_argument("--score-threshold", type=unit_float, default=None,
                        help="drop boxes whose detection confidence is below this, so a phrase whose object is "
                             "absent can get no box (confidence: CLIP cosine of the box with the phrase, for g "
                             "combined with the raw heat in the box; see wwbl.inference.scoring and "
                             "docs/shapes_report/scores.md; default: keep all)" + off)
    parser.add_argument("--cross-phrase-iou", type=unit_float, default=None,
                        help="of boxes of different phrases overlapping by more than this IoU keep only the most "
                             "confident, so one object gets one name (default: off)" + off)
    parser.add_argument("--top-k", type=positive_int, default=None,
                        help="keep each image's k most confident boxes (default: all)" + off)
    parser.add_argument("--score-view", choices=defaults.SCORE_VIEWS, default=defaults.SCORE_VIEWS[0],
                        help="how CLIP sees a box for its confidence: 'context' the whole frame with everything "
                             "outside the box blanked to CLIP's mean colour (as L_fore shows CLIP g's masks), "
                             "'crop' the box resized to CLIP's input (default: %(default)s)")


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """The WWbL pipeline's flags (read back by :func:`wwbl.inference.options.pipeline_options_from_args`)."""
    parser.add_argument("--ss-encoding", choices=defaults.SS_ENCODINGS, default=defaults.SS_ENCODING,
                        help="selective-search input encoding")
    parser.add_argument("--max-proposals", type=positive_int, default=None,
                        help="keep only the first N proposals per image: the grid boxes first (13 at the default "
                             "224 frame), then selective search's in its own order; changes results, for speed "
                             "(default: none)")
    parser.add_argument("--proposal-dedup-iou", type=unit_float, default=None,
                        help="drop a proposal whose IoU with an earlier kept one exceeds this (greedy, the earlier "
                             "box stays; applied before --max-proposals); changes results, for speed (default: off)")
    parser.add_argument("--min-proposal-area", type=unit_float, default=defaults.MIN_PROPOSAL_AREA,
                        help="keep proposals whose area exceeds this fraction of the image (the reference's 0.1 "
                             "suits photos; the shapes world's objects cover 2-20 %% of a scene: it uses 0.02)")
    parser.add_argument("--cluster-threshold", type=unit_float, default=defaults.CLUSTER_THRESHOLD,
                        help="community-detection cosine threshold")
    parser.add_argument("--min-cluster-size", type=positive_int, default=defaults.MIN_CLUSTER_SIZE)
    parser.add_argument("--num-beams", type=positive_int, default=defaults.NUM_BEAMS,
                        help="BLIP beam-search width (fewer: faster, other captions)")
    parser.add_argument("--max-caption-length", type=positive_int, default=defaults.MAX_CAPTION_LENGTH)
    parser.add_argument("--caption-chunk", type=positive_int, default=defaults.CAPTION_CHUNK,
                        help="crops per BLIP batch, across the images of a batch (halved on CUDA out-of-memory; "
                             "captions do not depend on it)")
    parser.add_argument("--caption-repeated-crops", action="store_true",
                        help="caption every proposal crop, even identical ones (same pixel rectangle or same "
                             "pixels); by default each distinct crop is captioned once and its caption shared, "
                             "which gives the same captions faster (this flag times the reference's cost)")
    parser.add_argument("--reference-crops", action="store_true",
                        help=f"crop proposals from the image resized to {defaults.REFERENCE_CROP_SIZE}² as the "
                             "released code (default: from the original image)")
