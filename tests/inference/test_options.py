"""One object per knob through every door: the box rule's threshold and NMS flags reach the rule in
infer.py and ``python -m wwbl.evaluation``, and both CLIs take the same WWbL pipeline flags."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from wwbl.box_rules import BoxRule
from wwbl.evaluation.__main__ import build_parser
from wwbl.evaluation.evaluate import box_function, settings_from_args
from wwbl.inference.captioner import CaptionSettings
from wwbl.inference.options import WWbLOptions, box_rule_from_args, pipeline_options_from_args
from wwbl.inference.proposals import ProposalGenerator

ROOT = Path(__file__).resolve().parents[2]
EVAL_BASE = ["--dataset", "flickr30k", "--root", "data", "--method", "gae", "--out", "runs/x"]
WSOL_BASE = ["--dataset", "cub", "--root", "data", "--method", "gae", "--out", "runs/x"]
PIPELINE_FLAGS = ["--ss-encoding", "uint8_bgr", "--max-proposals", "7", "--cluster-threshold", "0.6",
                  "--min-cluster-size", "3", "--num-beams", "2", "--max-caption-length", "12",
                  "--caption-chunk", "5", "--reference-crops", "--proposal-dedup-iou", "0.7",
                  "--caption-repeated-crops", "--min-proposal-area", "0.02"]


def two_blobs() -> torch.Tensor:
    """A 1.0 blob (box x 5..25, y 5..25) and a 0.6 blob (box x 50..80, y 30..50)."""
    heat = torch.zeros(60, 90)
    heat[5:25, 5:25] = 1.0
    heat[30:50, 50:80] = 0.6
    return heat


def blob_in_an_l() -> torch.Tensor:
    """An L (value 1, box 0..40 square) around a separate 0.9 blob (box x 15..35, y 5..25): their boxes
    overlap with IoU 400/1600 = 0.25; box means 0.9 (blob) and (700 + 400·0.9)/1600 = 0.6625 (L)."""
    heat = torch.zeros(60, 90)
    heat[0:40, 0:10] = 1.0
    heat[30:40, 0:40] = 1.0
    heat[5:25, 15:35] = 0.9
    return heat


def boxes(rule, heatmap) -> list[list[float]]:
    return rule(heatmap).boxes.tolist()


def test_the_crafted_maps_answer_to_threshold_and_nms():
    assert boxes(BoxRule(threshold=0.1).detect, two_blobs()) == [[5, 5, 25, 25], [50, 30, 80, 50]]
    assert boxes(BoxRule(threshold=0.99).detect, two_blobs()) == [[5, 5, 25, 25]]
    assert boxes(BoxRule().detect, blob_in_an_l()) == [[15, 5, 35, 25], [0, 0, 40, 40]]  # NMS 0.3 keeps both
    assert boxes(BoxRule(nms_iou=0.2).detect, blob_in_an_l()) == [[15, 5, 35, 25]]
    with pytest.raises(ValueError, match="NMS"):
        BoxRule(rule="wsol", nms_iou=0.2)


@pytest.mark.parametrize("flags, heatmap, expected", [
    (["--box-threshold", "0.1"], two_blobs(), [[5, 5, 25, 25], [50, 30, 80, 50]]),
    (["--box-threshold", "0.99"], two_blobs(), [[5, 5, 25, 25]]),
    (["--box-nms-iou", "0.2"], blob_in_an_l(), [[15, 5, 35, 25]]),
])
def test_box_flags_reach_the_rule_in_both_clis(infer, flags, heatmap, expected):
    infer_args = infer.parse_args(["--image", "x.png"] + flags)
    eval_settings = settings_from_args(build_parser().parse_args(["wsg", *EVAL_BASE, "--boxes", "wsg", *flags]))
    through_eval = box_function(eval_settings, extractor=object())
    assert boxes(box_rule_from_args(infer_args).detect, heatmap) == expected
    assert boxes(through_eval, heatmap) == expected


def test_wsol_threshold_flag_reaches_the_wsol_rule():
    heat = two_blobs()
    settings = settings_from_args(build_parser().parse_args(["wsol", *WSOL_BASE, "--box-threshold", "0.7"]))
    assert settings.box_rule("wsol") == BoxRule(rule="wsol", threshold=0.7)
    # The largest contour above 0.1 is the 0.6 blob (600 px); above 0.7 only the 1.0 blob is left.
    assert boxes(box_function(settings, extractor=object()), heat) == [[5, 5, 25, 25]]
    default = settings_from_args(build_parser().parse_args(["wsol", *WSOL_BASE]))
    assert boxes(box_function(default, extractor=object()), heat) == [[50, 30, 80, 50]]


def test_the_wwbl_evaluation_takes_the_pipeline_flags_of_infer(infer):
    expected = WWbLOptions(proposals=ProposalGenerator(encoding="uint8_bgr", dedup_iou=0.7, max_proposals=7,
                                                       min_area_ratio=0.02),
                           caption=CaptionSettings(num_beams=2, max_length=12, chunk_size=5, reference_crop_size=224,
                                                   share_identical_crops=False),
                           cluster_threshold=0.6, min_cluster_size=3)
    from_infer = pipeline_options_from_args(infer.parse_args(["--image", "x.png", *PIPELINE_FLAGS]))
    from_eval = settings_from_args(build_parser().parse_args(["wwbl", *EVAL_BASE, *PIPELINE_FLAGS])).pipeline
    assert from_infer == expected and from_eval == expected
    assert settings_from_args(build_parser().parse_args(["wwbl", *EVAL_BASE])).pipeline == WWbLOptions()


def test_speed_options_are_off_by_default_and_sharing_on(infer):
    options = pipeline_options_from_args(infer.parse_args(["--image", "x.png"]))
    assert options.proposals.dedup_iou is None and options.proposals.max_proposals is None
    assert options.caption.num_beams == 3 and options.caption.chunk_size == 120
    assert options.caption.share_identical_crops is True


@pytest.mark.parametrize("flags, field, value", [
    (["--proposal-dedup-iou", "0.5"], "dedup_iou", 0.5), (["--proposal-dedup-iou", "0"], "dedup_iou", 0.0),
    (["--max-proposals", "20"], "max_proposals", 20), (["--min-proposal-area", "0.02"], "min_area_ratio", 0.02),
    ([], "min_area_ratio", 0.1),
])
def test_proposal_speed_flags_parse(infer, flags, field, value):
    assert getattr(pipeline_options_from_args(infer.parse_args(["--image", "x.png", *flags])).proposals, field) == value


def test_min_proposal_area_decides_which_grid_boxes_survive():
    # at the 224 frame the 1/2 and 1/3 grids (4 + 9 boxes, >= 1/9 of the frame) pass 10 %; the 1/4 grid's
    # 16 boxes (57² of 224², 6.5 %; the border ones clipped to 53·57 = 6.0 %) pass only a 2 % filter
    image = Image.new("RGB", (224, 224))
    assert len(ProposalGenerator(selective_search=False)(image)) == 13
    assert len(ProposalGenerator(selective_search=False, min_area_ratio=0.02)(image)) == 29
    with pytest.raises(ValueError, match="min_area_ratio"):
        ProposalGenerator(min_area_ratio=1.0)


@pytest.mark.parametrize("flags", [["--proposal-dedup-iou", "1.2"], ["--proposal-dedup-iou", "x"],
                                   ["--max-proposals", "0"], ["--num-beams", "0"]])
def test_bad_speed_flags_are_one_line_errors(infer, flags, capsys):
    with pytest.raises(SystemExit):
        infer.parse_args(["--image", "x.png", *flags])
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_speed_options_reach_the_pipeline_of_wwbl_load(tmp_path, tiny_clip):
    """``wwbl.load(options=…)`` hands the proposals to the pipeline and the caption settings to the captioner."""
    import wwbl
    from tests.helpers.tiny_blip import save_tiny_blip

    blip = save_tiny_blip(tmp_path / "blip")
    options = WWbLOptions(proposals=ProposalGenerator(dedup_iou=0.5, max_proposals=20),
                          caption=CaptionSettings(num_beams=1, share_identical_crops=False))
    model = wwbl.load(method="gae", clip=tiny_clip, captioner=str(blip), options=options)
    assert model.wwbl.proposals.dedup_iou == 0.5 and model.wwbl.proposals.max_proposals == 20
    assert model.captioner.settings.num_beams == 1 and model.captioner.settings.share_identical_crops is False
