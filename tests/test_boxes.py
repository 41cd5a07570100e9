"""wwbl.boxes: the canonical xyxy Detections, its converters (COCO xywh, normalised, transformers'
post-process layout, supervision) and the box helpers."""
import sys

import numpy as np
import pytest
import supervision as sv
import torch

from wwbl.boxes import (Detections, clip_boxes, denormalize_boxes, from_coco_xywh, normalize_boxes, to_coco_xywh,
                        union_box)


def test_box_conversions_round_trip_on_non_square_image():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 200.0, 100.0]])
    xywh = to_coco_xywh(boxes)
    assert xywh[0].tolist() == [10.0, 20.0, 40.0, 20.0]
    assert torch.equal(from_coco_xywh(xywh), boxes)
    norm = normalize_boxes(boxes, (100, 200))  # H=100, W=200
    assert norm[1].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert norm[0].tolist() == pytest.approx([0.05, 0.2, 0.25, 0.4])
    assert torch.allclose(denormalize_boxes(norm, (100, 200)), boxes)


def test_union_and_clip():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [5.0, 30.0, 30.0, 90.0]])
    assert union_box(boxes).tolist() == [5.0, 20.0, 50.0, 90.0]
    assert clip_boxes(torch.tensor([[-5.0, 3.0, 120.0, 70.0]]), (60, 100)).tolist() == [[0.0, 3.0, 100.0, 60.0]]
    with pytest.raises(ValueError):
        union_box(torch.zeros(0, 4))


def test_detections_validate_and_serialise():
    det = Detections(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.5]), ["a cat"])
    assert det.to_dicts() == [{"box": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "phrase": "a cat"}]
    with pytest.raises(ValueError):
        Detections(torch.zeros(2, 4), torch.zeros(1))
    assert len(Detections.empty()) == 0


BOXES = [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 30.0], [1.5, 2.5, 3.5, 4.5]]
DETS = Detections(torch.tensor(BOXES), torch.tensor([0.9, 0.5, 0.25]), ["a dog", "a cat", "a dog"])


def test_transformers_layout_has_absolute_xyxy_boxes_and_an_id2label():
    results, id2label = DETS.to_transformers()
    assert set(results) == {"scores", "labels", "boxes"}
    assert results["labels"].dtype == torch.int64 and results["labels"].tolist() == [0, 1, 0]
    assert id2label == {0: "a dog", 1: "a cat"}
    assert results["boxes"].tolist() == BOXES and results["scores"].tolist() == pytest.approx([0.9, 0.5, 0.25])


def test_given_labels_fix_the_ids_and_must_cover_every_phrase():
    results, id2label = DETS.to_transformers(labels=["a cat", "a bird", "a dog"])
    assert results["labels"].tolist() == [2, 0, 2] and id2label == {0: "a cat", 1: "a bird", 2: "a dog"}
    with pytest.raises(ValueError, match="a dog"):
        DETS.to_transformers(labels=["a cat"])


def test_supervision_detections_match_supervisions_own_reading_of_the_transformers_layout():
    mine = DETS.to_supervision()
    theirs = sv.Detections.from_transformers(*DETS.to_transformers())
    assert np.array_equal(mine.xyxy, theirs.xyxy) and np.array_equal(mine.class_id, theirs.class_id)
    assert np.allclose(mine.confidence, theirs.confidence)
    assert list(mine.data["class_name"]) == list(theirs.data["class_name"]) == ["a dog", "a cat", "a dog"]
    assert len(mine[mine.confidence > 0.4]) == 2  # supervision's own filtering works on it


def test_detections_without_phrases_and_empty_ones_convert():
    plain = Detections(torch.tensor(BOXES[:2]), torch.tensor([0.3, 0.2]))
    results, id2label = plain.to_transformers()
    assert results["labels"].tolist() == [0, 0] and id2label == {0: ""}
    assert len(Detections.empty().to_supervision()) == 0


def test_missing_supervision_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # import supervision now raises ImportError
    with pytest.raises(ImportError, match="pip install supervision"):
        DETS.to_supervision()
