"""The detection confidence: raw heat in a box, the CLIP crop term, threshold / top-k, every door."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers.scoring import FixedRawMaps, block, red_left_blue_right
from wwbl.boxes import Detections
from wwbl.inference import GroundingPipeline, Scoring, WWbLModel
from wwbl.inference.scoring import box_heat, box_masks, box_similarity, confidence, cross_phrase_survivors

ROOT = Path(__file__).resolve().parents[2]


def test_box_heat_is_the_raw_mean_recovered_from_the_range():
    normalised = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0]])[None]
    ranges = torch.tensor([[0.2, 0.6]])  # raw = 0.2 + 0.4 · normalised
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0], [0.5, 2.2, 1.5, 2.8]])
    heat = box_heat(normalised, ranges, torch.zeros(3, dtype=torch.long), boxes)
    # box 1: mean normalised (1+1+0+0)/4 = 0.5 → 0.4; box 2: (2 + 2)/16 = 0.25 → 0.3;
    # box 3 covers the pixels it touches, columns 0..1 of row 2: 0.5 → 0.4
    assert heat.tolist() == pytest.approx([0.4, 0.3, 0.4])


@pytest.mark.parametrize("view", ["context", "crop"])
def test_box_similarity_sees_each_box(view):
    extractor = FixedRawMaps({"red": block(1.0)})
    boxes = torch.tensor([[0.0, 0.0, 4.0, 8.0], [0.0, 0.0, 4.0, 8.0], [4.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    cos = box_similarity(extractor, [red_left_blue_right()], [boxes], [["red", "blue", "blue", "red"]], view)[0]
    # left half pure red, right half pure blue, the whole image half and half: cos (1,0,1)/√2 · red = 1/√2;
    # the crop view up to the bilinear blend of the last half pixel at a crop's inner edge (roi_align samples there)
    assert cos.tolist() == pytest.approx([1.0, 0.0, 1.0, 2 ** -0.5], abs=0.04 if view == "crop" else 1e-6)


def test_context_view_keeps_the_box_in_place_and_blanks_the_rest():
    image = torch.zeros(3, 8, 8)
    image[1, :2, :2] = 1.0   # a green corner outside the box
    image[0, 4:, 4:] = 1.0   # red inside it
    extractor = FixedRawMaps({"red": block(1.0)})
    box = torch.tensor([[4.0, 4.0, 8.0, 8.0]])
    context = box_similarity(extractor, [image], [box], [["green"]], "context")[0]
    assert context.item() == pytest.approx(0.0, abs=1e-6)  # the green corner is blanked


def test_box_masks_are_the_covered_fraction_of_each_input_pixel():
    # a 4×8 (h×w) image on a 4×4 grid: x scales by 1/2, y by 1
    masks = box_masks(torch.tensor([[1.0, 0.5, 5.0, 2.0], [0.0, 0.0, 8.0, 4.0]]), (4, 8), 4)
    expected = torch.zeros(4, 4)
    expected[0, 0:3] = 0.5          # row 0 covered from 0.5 to 1; columns from 0.5 to 2.5
    expected[1, 0:3] = 1.0
    expected[:2, 0] *= 0.5
    expected[:2, 2] *= 0.5
    assert torch.allclose(masks[0], expected)
    assert torch.equal(masks[1], torch.ones(4, 4))


def test_cross_phrase_iou_leaves_one_name_per_object():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 9], [1.0, 0, 10, 10], [20.0, 20, 30, 30], [0.0, 0, 10, 10]])
    dets = Detections(boxes, torch.tensor([0.3, 0.5, 0.2, 0.1, 0.4]), ["a", "b", "c", "a", "b"])
    # b (0.5) suppresses a and c on the same object; its other box (0.4) is the same phrase: kept;
    # a's far box overlaps nothing
    assert cross_phrase_survivors(dets, 0.5).tolist() == [1, 3, 4]
    assert Scoring(cross_phrase_iou=0.5).keep(dets).phrases == ["b", "a", "b"]
    # at 0.95 only b's box 4 (identical to a's box 0, IoU 1) suppresses; IoUs 0.9 and 0.82 survive
    assert Scoring(cross_phrase_iou=0.95).keep(dets).phrases == ["b", "c", "a", "b"]
    assert Scoring(threshold=0.35, cross_phrase_iou=0.5).keep(dets).phrases == ["b", "b"]
    assert len(cross_phrase_survivors(dets.select(torch.zeros(0, dtype=torch.long)), 0.5)) == 0


def test_confidence_is_the_geometric_mean_or_the_clip_term():
    cos, heat = torch.tensor([0.64, -0.2, 0.25]), torch.tensor([0.25, 0.9, 1.0])
    assert confidence(cos, heat).tolist() == pytest.approx([0.4, 0.0, 0.5])
    assert confidence(cos, None).tolist() == pytest.approx([0.64, 0.0, 0.25])


def test_an_absent_phrase_scores_low_and_gets_no_box_under_the_threshold():
    # Same geometry for both phrases, so the min-max-normalised maps and the rule's scores are equal;
    # the raw map of "a green one" is almost zero (g: "not here") and its crop is not green either.
    extractor = FixedRawMaps({"a red one": block(0.9), "a green one": block(0.01)})
    image = red_left_blue_right()
    plain = GroundingPipeline(extractor, scoring=None)([image], [["a red one", "a green one"]])[0]
    assert plain.boxes_for("a red one").scores.tolist() == plain.boxes_for("a green one").scores.tolist() == [1.0]
    scored = GroundingPipeline(extractor)([image], [["a red one", "a green one"]])[0]
    red, green = scored.boxes_for("a red one"), scored.boxes_for("a green one")
    assert red.rule_scores.tolist() == green.rule_scores.tolist() == [1.0]  # the old score is kept
    assert red.scores.item() == pytest.approx(0.9 ** 0.5, abs=1e-3)          # sqrt(heat 0.9 · cos 1)
    assert green.scores.item() == pytest.approx(0.0, abs=1e-4)               # cos(red crop, green) = 0
    kept = GroundingPipeline(extractor, scoring=Scoring(threshold=0.5))([image], [["a red one", "a green one"]])[0]
    assert kept.detections.phrases == ["a red one"] and len(kept.boxes_for("a green one")) == 0


def test_without_absolute_maps_only_the_clip_term_counts():
    extractor = FixedRawMaps({"a red one": block(0.5), "a blue one": block(0.01)}, absolute=False)
    result = GroundingPipeline(extractor)([red_left_blue_right()], [["a red one", "a blue one"]])[0]
    # both boxes lie on the red left half: cos 1 with "red", 0 with "blue", whatever the raw heat
    assert result.boxes_for("a red one").scores.tolist() == pytest.approx([1.0], abs=1e-3)
    assert result.boxes_for("a blue one").scores.tolist() == pytest.approx([0.0], abs=0.04)  # edge blend


def detections(scores):
    n = len(scores)
    return Detections(torch.arange(4 * n, dtype=torch.float32).reshape(n, 4), torch.tensor(scores),
                      [f"p{i}" for i in range(n)], rule_scores=torch.full((n,), 0.8))


def test_threshold_keeps_scores_at_or_above_it_in_order():
    kept = Scoring(threshold=0.5).keep(detections([0.2, 0.5, 0.9, 0.49]))
    assert kept.phrases == ["p1", "p2"] and kept.scores.tolist() == pytest.approx([0.5, 0.9])
    assert kept.boxes[0].tolist() == [4.0, 5.0, 6.0, 7.0] and kept.rule_scores.tolist() == pytest.approx([0.8, 0.8])


def test_top_k_keeps_the_k_best_most_confident_first_after_the_threshold():
    dets = detections([0.2, 0.5, 0.9, 0.49, 0.7])
    assert Scoring(top_k=2).keep(dets).phrases == ["p2", "p4"]
    assert Scoring(top_k=10).keep(dets).phrases == ["p2", "p4", "p1", "p3", "p0"]
    assert Scoring(threshold=0.6, top_k=3).keep(dets).phrases == ["p2", "p4"]
    assert Scoring().keep(dets).phrases == dets.phrases
    assert len(Scoring(threshold=0.95).keep(dets)) == 0


@pytest.mark.parametrize("settings", [{"threshold": 1.5}, {"threshold": -0.1}, {"top_k": 0}, {"view": "blur"},
                                      {"cross_phrase_iou": 1.2}])
def test_scoring_rejects_bad_values(settings):
    with pytest.raises(ValueError):
        Scoring(**settings)


def test_json_records_carry_the_rule_score_as_box_score():
    record = detections([0.3]).to_dicts()[0]
    assert record == {"box": [0.0, 1.0, 2.0, 3.0], "score": 0.3, "phrase": "p0", "box_score": 0.8}


def test_ranges_recover_the_raw_map_of_the_same_forward_pass():
    raw = block(0.7) + 0.1
    extractor = FixedRawMaps({"a red one": raw})
    image = red_left_blue_right()
    maps, ranges = extractor.heatmaps_and_ranges([image], [["a red one"]], native_resolution=True)
    assert ranges[0][0].tolist() == pytest.approx([0.1, 0.8])
    assert torch.allclose(ranges[0][0, 0] + (ranges[0][0, 1] - ranges[0][0, 0]) * maps[0][0], raw, atol=1e-6)
    assert torch.equal(extractor.heatmaps([image], [["a red one"]])[0], extractor.heatmaps_and_ranges([image], [["a red one"]])[0][0])


def test_infer_flags_reach_the_model(infer):
    from wwbl.inference.batch import build_model

    args = infer.parse_args(["--image", "x.png", "--phrase", "a red square", "--score-threshold", "0.4",
                             "--top-k", "2", "--cross-phrase-iou", "0.5", "--score-view", "crop", "--device", "cpu"])
    infer.use_bundled_models(args)
    model = build_model(args)
    assert model.scoring == Scoring(threshold=0.4, top_k=2, view="crop", cross_phrase_iou=0.5)
    assert model.grounding.scoring == model.scoring
    assert build_model(infer.parse_args(["--image", "x.png", "--checkpoint", args.checkpoint,
                                         "--device", "cpu"])).scoring == Scoring()


@pytest.mark.parametrize("flags", [["--score-threshold", "1.5"], ["--top-k", "0"], ["--score-view", "blur"],
                                   ["--cross-phrase-iou", "2"], ["--min-proposal-area", "1.5"]])
def test_infer_rejects_bad_score_flags(infer, flags):
    with pytest.raises(SystemExit):
        infer.parse_args(["--image", "x.png", *flags])


def test_wwbl_model_passes_scoring_to_both_pipelines():
    extractor = FixedRawMaps({"a red one": block(0.9)})
    model = WWbLModel(extractor, captioner="unused", scoring=Scoring(top_k=1))
    assert model.grounding.scoring == Scoring(top_k=1)
    model._captioner = object()  # the WWbL pipeline is built lazily around whatever captioner there is
    assert model.wwbl.scoring == Scoring(top_k=1)
    assert WWbLModel(extractor, captioner="unused", scoring=None).grounding.scoring is None
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    assert len(model.ground(image, ["a red one"]).detections) == 1
