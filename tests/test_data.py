"""Training data loaders on generated datasets in their published layouts; named errors."""

import json
import os
import pickle

import pytest
import torch
from training_layouts import CUB_CLASSES, write_coco, write_cub, write_flickr30k, write_visual_genome

from wwbl.data import CocoCaptions, CUBEval, CUBTrain, GroundingDataModule, VisualGenomeRegions, WSOLDataModule
from wwbl.data.coco import drop_words
from wwbl.data.transforms import eval_transform, grounding_train_transform, wsol_train_transform
from wwbl.readers.common import read_pickle_or_json
from wwbl.readers.visual_genome import read_split_file
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


def test_visual_genome_split_and_phrase_rules(tmp_path):
    write_visual_genome(tmp_path)
    ds = VisualGenomeRegions(str(tmp_path), TF, split="train")
    assert len(ds) == 3
    # the 80-word phrase is dropped and phrases are lowercased
    assert ds.phrases == [["a green ball 1"], ["a green ball 2"], ["a green ball 3"]]
    assert ds[0]["phrase"] == "a green ball 1"
    assert len(VisualGenomeRegions(str(tmp_path), TF, split="test")) == 1


def test_visual_genome_json_and_txt_split_files(tmp_path):
    write_visual_genome(tmp_path)
    (tmp_path / "ids.txt").write_text("2\n3\n")
    (tmp_path / "split.json").write_text(json.dumps({"train": [1], "test": [4]}))
    assert len(VisualGenomeRegions(str(tmp_path), TF, split_file=str(tmp_path / "ids.txt"))) == 2
    assert read_split_file(str(tmp_path / "split.json"), "test") == [4]
    with pytest.raises(AnnotationError, match="no split 'val'"):
        read_split_file(str(tmp_path / "split.json"), "val")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_split_pickle_is_read_safely(tmp_path):
    path = tmp_path / "data_splits.pickle"
    with open(path, "wb") as f:
        pickle.dump({"train": [_Evil()]}, f)
    with pytest.raises(AnnotationError, match="refusing to load"):
        read_pickle_or_json(str(path), "split pickle")
    with open(path, "wb") as f:
        pickle.dump({"train": [1, 2], "test": ("3",)}, f)
    assert read_pickle_or_json(str(path), "split pickle") == {"train": [1, 2], "test": ("3",)}


def test_visual_genome_unknown_ids_and_missing_files(tmp_path):
    with pytest.raises(MissingResourceError, match="data_splits.pickle"):
        VisualGenomeRegions(str(tmp_path), TF)
    write_visual_genome(tmp_path)
    (tmp_path / "ids.txt").write_text("1\n99\n")
    with pytest.raises(AnnotationError, match="99"):
        VisualGenomeRegions(str(tmp_path), TF, split_file=str(tmp_path / "ids.txt"))


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


def test_transforms_sizes():
    from PIL import Image

    img = Image.new("RGB", (50, 30), (255, 0, 0))
    assert grounding_train_transform(20)(img).shape == (3, 20, 20)
    assert wsol_train_transform(16, 20)(img).shape == (3, 16, 16)
    out = eval_transform(12)(img)
    assert out.shape == (3, 12, 12) and torch.allclose(out[0], torch.ones(12, 12))
    with pytest.raises(ValueError):
        wsol_train_transform(32, 16)


def test_grounding_datamodule_batches_and_flickr_validation(tmp_path):
    write_coco(tmp_path / "coco")
    write_flickr30k(tmp_path / "flickr")
    dm = GroundingDataModule("coco", str(tmp_path / "coco"), image_size=32, batch_size=2, num_workers=0,
                             val_root=str(tmp_path / "flickr"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["phrase"]) == 2
    val = next(iter(dm.val_dataloader()))
    assert len(val) == 2 and val[0]["size"] == (40, 50)
    assert val[0]["phrases"] == [["a man", "the person"]]
    assert torch.allclose(val[0]["boxes"][0], torch.tensor([[4.0, 4.0, 29.0, 34.0]]))


def test_wsol_datamodule(tmp_path):
    write_cub(tmp_path)
    dm = WSOLDataModule(str(tmp_path), image_size=24, resize_size=28, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 24, 24)
    assert len(next(iter(dm.val_dataloader()))) == 3
