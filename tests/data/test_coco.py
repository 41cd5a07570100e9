"""COCO captions for training: items, the reference folder layout, word dropout, named errors."""
import json
import os

import pytest
import torch

from tests.helpers.training_layouts import write_coco
from wwbl.data import CocoCaptions
from wwbl.data.coco import drop_words
from wwbl.data.transforms import grounding_train_transform
from wwbl.errors import AnnotationError, MissingResourceError


TF = grounding_train_transform(32, hflip_p=0.5)


def test_coco_items_are_images_with_one_of_their_captions(tmp_path):
    captions = write_coco(tmp_path)
    ds = CocoCaptions(str(tmp_path), TF)
    assert len(ds) == 4
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 32, 32)
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert item["phrase"] in captions[i + 1]


def test_coco_reference_images_folder_is_found(tmp_path):
    write_coco(tmp_path)
    os.makedirs(tmp_path / "images")
    os.rename(tmp_path / "train2014", tmp_path / "images" / "train2014")
    assert len(CocoCaptions(str(tmp_path), TF)) == 4


def test_word_dropout_keeps_an_ordered_nonempty_subset():
    torch.manual_seed(0)
    caption = "one two three four five six seven eight"
    lengths = []
    for _ in range(200):
        out = drop_words(caption, 0.5).split()
        assert out and all(w in caption.split() for w in out)
        assert out == sorted(out, key=caption.split().index)
        lengths.append(len(out))
    assert 3 < sum(lengths) / len(lengths) < 5  # expected 4 of 8 words kept
    assert drop_words("single", 0.9) == "single"


def test_coco_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(MissingResourceError, match="captions_train2014.json"):
        CocoCaptions(str(tmp_path), TF)
    write_coco(tmp_path)
    os.remove(tmp_path / "train2014" / "COCO_train2014_000000000002.jpg")
    with pytest.raises(MissingResourceError, match="COCO_train2014_000000000002.jpg"):
        CocoCaptions(str(tmp_path), TF)
    (tmp_path / "annotations" / "captions_train2014.json").write_text("{broken")
    with pytest.raises(AnnotationError, match="captions_train2014.json"):
        CocoCaptions(str(tmp_path), TF)
    (tmp_path / "annotations" / "captions_train2014.json").write_text(json.dumps({"images": [{"id": 1}],
                                                                                  "annotations": []}))
    with pytest.raises(AnnotationError, match="malformed entry"):
        CocoCaptions(str(tmp_path), TF)


def test_unreadable_training_image_is_reported_and_skipped(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "train2014" / "COCO_train2014_000000000001.jpg").write_bytes(b"not a jpeg")
    ds = CocoCaptions(str(tmp_path), TF)
    with pytest.warns(UserWarning, match="COCO_train2014_000000000001.jpg"):
        item = ds[0]
    assert "2" in item["phrase"]  # the next image was used instead
