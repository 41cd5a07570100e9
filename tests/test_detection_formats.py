"""`Detections` in the layouts of transformers' detection post-processing and of supervision."""
import sys

import numpy as np
import pytest
import supervision as sv
import torch

from wwbl.boxes import Detections

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
