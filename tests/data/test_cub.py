"""CUB for WSOL training and evaluation: records and named errors."""
import os

import pytest
import torch

from tests.helpers.training_layouts import CUB_CLASSES, write_cub
from wwbl.data import CUBEval, CUBTrain
from wwbl.data.transforms import eval_transform, grounding_train_transform, wsol_train_transform
from wwbl.errors import AnnotationError, MissingResourceError


TF = grounding_train_transform(32, hflip_p=0.5)


def test_cub_train_and_test_records(tmp_path):
    info = write_cub(tmp_path)
    train = CUBTrain(str(tmp_path), wsol_train_transform(24, 28), text="class_name")
    assert len(train) == sum(1 for v in info.values() if v[1] == 1)
    assert train[0]["image"].shape == (3, 24, 24)
    assert train[0]["phrase"] == "laysan albatross"  # image 1 has class index 1
    test = CUBEval(str(tmp_path), eval_transform(32))
    item = test[0]  # image 2: class 0, box xywh (4, 3, 20, 15.5)
    assert item["phrases"] == [["bird"]] and item["size"] == (40, 48)
    assert torch.allclose(item["boxes"][0], torch.tensor([[4.0, 3.0, 24.0, 18.5]]))
    assert CUB_CLASSES[0].endswith("Black_footed_Albatross")


def test_cub_malformed_and_missing_files_are_named(tmp_path):
    write_cub(tmp_path)
    (tmp_path / "bounding_boxes.txt").write_text("1 2 3\n")
    with pytest.raises(AnnotationError, match="bounding_boxes.txt' line 1"):
        CUBTrain(str(tmp_path), TF)
    os.remove(tmp_path / "classes.txt")
    with pytest.raises(MissingResourceError, match="classes.txt"):
        CUBTrain(str(tmp_path), TF)
