"""Benchmark loaders on small hand-made annotation fixtures written in each publisher's format."""
from __future__ import annotations

import collections
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wwbl.errors import AnnotationError, MissingResourceError
from wwbl.readers import acc_threshold, load_dataset, load_mask


def _image(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), 128).save(path)
    return path


# ----------------------------------------------------------------------------- Flickr30k Entities

FLICKR_XML = """<annotation><filename>{id}.jpg</filename>
<size><width>200</width><height>100</height><depth>3</depth></size>
<object><name>11</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>51</xmax><ymax>61</ymax></bndbox></object>
<object><name>11</name><name>12</name><bndbox><xmin>101</xmin><ymin>1</ymin><xmax>151</xmax><ymax>41</ymax></bndbox></object>
<object><name>13</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>11</xmax><ymax>11</ymax></bndbox></object>
<object><name>14</name><nobndbox>1</nobndbox></object>
<object><name>0</name><scene>1</scene></object>
</annotation>"""
FLICKR_SENTENCES = (
    "[/EN#11/people A Man] rides [/EN#12/animals a horse] near [/EN#13/other a Rock] .\n"
    "[/EN#11/people The rider] and [/EN#14/other the wind] .\n"
)


def _flickr(root: Path) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "Sentences").mkdir()
    (root / "Annotations" / "1.xml").write_text(FLICKR_XML.format(id=1))
    (root / "Sentences" / "1.txt").write_text(FLICKR_SENTENCES)
    (root / "Annotations" / "2.xml").write_text("<annotation><size>")  # malformed
    (root / "Sentences" / "2.txt").write_text(FLICKR_SENTENCES)
    (root / "test.txt").write_text("1\n2\n")
    (root / "flickr30k_images").mkdir()
    return root


def test_flickr30k_entities_protocol(tmp_path: Path) -> None:
    index = load_dataset("flickr30k", _flickr(tmp_path), "test")
    by_entity = {s.item_id: s for s in index.samples}
    # Entity 13's first box is 10×10 = 0.5 % of 200×100 → filtered; 14 has no box.
    assert sorted(by_entity) == ["1/11", "1/12"]
    man = by_entity["1/11"]
    assert man.phrases == ["a man", "the rider"]  # every mention, lowercased, in order
    # 0-based boxes (−1); both of the entity's boxes kept for the union rule.
    assert man.gt_boxes.tolist() == [[10.0, 20.0, 50.0, 60.0], [100.0, 0.0, 150.0, 40.0]]
    assert man.size_hw == (100, 200)
    assert by_entity["1/12"].gt_boxes.tolist() == [[100.0, 0.0, 150.0, 40.0]]  # shared box of two names
    assert man.image_path == tmp_path / "flickr30k_images" / "1.jpg"
    assert len(index.skipped) == 1 and "2.xml" in index.skipped[0]


def test_flickr30k_options(tmp_path: Path) -> None:
    index = load_dataset("flickr30k", _flickr(tmp_path), "test", min_area_fraction=None, text_prefix="image of ")
    phrases = {s.item_id: s.phrases for s in index.samples}
    assert phrases["1/13"] == ["image of a rock"]


def test_flickr30k_malformed_sentence_names_line(tmp_path: Path) -> None:
    root = _flickr(tmp_path)
    (root / "Sentences" / "1.txt").write_text("ok line\n[/EN#11/people A man rides .\n")
    index = load_dataset("flickr30k", root, "test")
    assert index.samples == [] and any("line 2" in s for s in index.skipped)


def test_flickr30k_missing_split_names_file(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="val.txt"):
        load_dataset("flickr30k", tmp_path, "val")


# ----------------------------------------------------------------------------- ReferIt


def _referit(root: Path, as_json: bool = False) -> Path:
    table = {
        "1500": {"annotations": [
            {"query": "Left Tree", "bbox": [[0, 0, 50, 40]]},  # 2000 / 8000 = 25 %
            {"query": "tiny dot", "bbox": [[0, 0, 10, 10]]},  # 1.25 % → dropped
        ]},
        "1501": {"annotations": [{"query": "sky", "bbox": [[0, 0, 10]]}]},  # malformed box
    }
    (root / "annotations").mkdir(parents=True)
    if as_json:
        (root / "annotations" / "test.json").write_text(json.dumps(table))
    else:
        (root / "annotations" / "test.pickle").write_bytes(pickle.dumps(table))
    _image(root / "ReferIt_Images" / "01" / "images" / "1500.jpg", 100, 80)
    _image(root / "ReferIt_Images" / "01" / "images" / "1501.jpg", 100, 80)
    return root


@pytest.mark.parametrize("as_json", [False, True])
def test_referit(tmp_path: Path, as_json: bool) -> None:
    index = load_dataset("referit", _referit(tmp_path, as_json), "test")
    assert [s.phrases for s in index.samples] == [["Left Tree"]]
    sample = index.samples[0]
    assert sample.size_hw == (80, 100)
    assert sample.gt_boxes.tolist() == [[0.0, 0.0, 50.0, 40.0]]
    assert sample.image_path.parts[-3:] == ("01", "images", "1500.jpg")
    assert len(index.skipped) == 1 and "1501" in index.skipped[0]


def test_referit_pickle_with_classes_is_refused(tmp_path: Path) -> None:
    root = _referit(tmp_path)
    (root / "annotations" / "test.pickle").write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(AnnotationError, match="OrderedDict"):
        load_dataset("referit", root, "test")


# ----------------------------------------------------------------------------- Visual Genome


def test_visual_genome(tmp_path: Path) -> None:
    ann = tmp_path / "VG_Annotations"
    ann.mkdir()
    regions = [
        {"id": 7, "regions": [
            {"region_id": 70, "image_id": 7, "phrase": "A Red Car", "x": 10, "y": 5, "width": 40, "height": 30},
            {"region_id": 71, "image_id": 7, "phrase": "speck", "x": 0, "y": 0, "width": 2, "height": 2},
            {"region_id": 72, "image_id": 7, "phrase": "broken", "x": 0, "y": 0},
        ]},
        {"id": 8, "regions": [{"region_id": 80, "phrase": "train image", "x": 0, "y": 0, "width": 50, "height": 50}]},
    ]
    (ann / "region_descriptions.json").write_text(json.dumps(regions))
    (ann / "data_splits.pickle").write_bytes(pickle.dumps({"train": [8], "test": [7]}))
    _image(tmp_path / "VG_Images" / "7.jpg", 80, 60)
    index = load_dataset("vg", tmp_path, "test", text_prefix="image of ")
    assert [s.phrases for s in index.samples] == [["image of a red car"]]
    assert index.samples[0].gt_boxes.tolist() == [[10.0, 5.0, 50.0, 35.0]]
    assert index.samples[0].item_id == "7/70"
    assert len(index.skipped) == 1 and "region 2" in index.skipped[0]


# ----------------------------------------------------------------------------- ZSGNet CSVs


def test_zsgnet_flickr_and_vg(tmp_path: Path) -> None:
    flickr = tmp_path / "ds_csv_ann" / "flickr30k_c1" / "csv_dir"
    flickr.mkdir(parents=True)
    (flickr / "test.csv").write_text(
        'img_id,bbox,query,entity\n'
        '123,"[1, 2, 30, 40]",a big dog,5\n'
        '124.jpg,"[0, 0, 5, 5]","[\'first query\', \'second\']",6\n'
        '125,"[0, 0, 5]",bad box,7\n')
    vg = tmp_path / "ds_csv_ann" / "vg_split" / "csv_dir"
    vg.mkdir(parents=True)
    (vg / "test_balanced_c3.csv").write_text('image_fpath,bbox,phrase\nVG_100K/9.jpg,"[3, 4, 10, 12]",lamp\n')
    (tmp_path / "flickr" / "flickr30k_images").mkdir(parents=True)
    (tmp_path / "vg").mkdir()

    index = load_dataset("zsg_flickr_s1", tmp_path, "test")
    assert [s.phrases for s in index.samples] == [["a big dog"], ["first query"]]
    assert index.samples[0].gt_boxes.tolist() == [[1.0, 2.0, 30.0, 40.0]]
    assert index.samples[1].image_path.name == "124.jpg"
    assert len(index.skipped) == 1 and "line 4" in index.skipped[0]
    assert load_dataset("zsg_flickr_s1", tmp_path, "test", all_queries=True).samples[1].phrases == ["first query", "second"]

    vg_index = load_dataset("zsg_vg_s1", tmp_path, "test")
    assert vg_index.samples[0].image_path == tmp_path / "vg" / "VG_100K" / "9.jpg"
    assert vg_index.samples[0].phrases == ["lamp"]
    assert acc_threshold("zsg_vg_s1") == 0.3 and acc_threshold("zsg_flickr_s0") == 0.5


def test_zsgnet_missing_csv_is_named(tmp_path: Path) -> None:
    (tmp_path / "ds_csv_ann").mkdir()
    with pytest.raises(MissingResourceError, match="test_balanced_c2.csv"):
        load_dataset("zsg_vg_s0", tmp_path, "test")


def test_zsgnet_flickr_other_uses_sentence_types(tmp_path: Path) -> None:
    flickr = tmp_path / "ds_csv_ann" / "flickr30k" / "csv_dir"
    flickr.mkdir(parents=True)
    (flickr / "test.csv").write_text('img_id,bbox,query\n1,"[0, 0, 5, 5]",a Rock\n1,"[0, 0, 5, 5]",A Man\n')
    (tmp_path / "flickr" / "flickr30k_images").mkdir(parents=True)
    sentences = tmp_path / "Sentences"
    sentences.mkdir()
    (sentences / "1.txt").write_text(FLICKR_SENTENCES)
    index = load_dataset("zsg_flickr_other", tmp_path, "test", sentences_dir=sentences)
    assert [s.phrases for s in index.samples] == [["a Rock"]]


# ----------------------------------------------------------------------------- WSOL


def test_cub(tmp_path: Path) -> None:
    root = tmp_path / "CUB_200_2011"
    root.mkdir()
    (root / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n2 002.Laysan_Albatross/b.jpg\n")
    (root / "bounding_boxes.txt").write_text("1 10.0 20.0 30.0 40.0\n2 1.0 2.0 3.0 4.0\n")
    (root / "train_test_split.txt").write_text("1 0\n2 1\n")
    (root / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    index = load_dataset("cub", tmp_path, "test")
    assert len(index.samples) == 1
    sample = index.samples[0]
    assert sample.gt_boxes.tolist() == [[10.0, 20.0, 40.0, 60.0]]  # xywh → xyxy
    assert sample.label == 0 and sample.class_names == ("black footed albatross",)
    assert index.class_names == [("black footed albatross",), ("laysan albatross",)]


def test_stanford_cars_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "devkit").mkdir()
    (tmp_path / "cars_test").mkdir()
    savemat(tmp_path / "devkit" / "cars_meta.mat",
            {"class_names": np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)})
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    records = np.array([(30, 52, 246, 147, 2, "00001.jpg"), (1, 1, 5, 5, 9, "00002.jpg")], dtype=dtype)
    savemat(tmp_path / "cars_test_annos_withlabels.mat", {"annotations": records[None]})
    index = load_dataset("cars", tmp_path, "test")
    assert len(index.samples) == 1 and len(index.skipped) == 1  # class 9 does not exist
    sample = index.samples[0]
    assert sample.gt_boxes.tolist() == [[30.0, 52.0, 246.0, 147.0]]
    assert sample.label == 1 and sample.class_names == ("Acura RL Sedan 2012",)
    assert sample.image_path == tmp_path / "cars_test" / "00001.jpg"


def _voc(path: Path, boxes: list[tuple[str, list[int]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    objects = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                      f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in boxes)
    path.write_text(f"<annotation><size><width>500</width><height>375</height></size>{objects}</annotation>")


def test_stanford_dogs(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "lists").mkdir()
    (tmp_path / "Images").mkdir()
    files = np.array(["n02085620-Chihuahua/n02085620_1.jpg", "n02085782-Japanese_spaniel/n02085782_2.jpg"], dtype=object)
    anns = np.array(["n02085620-Chihuahua/n02085620_1", "n02085782-Japanese_spaniel/n02085782_2"], dtype=object)
    savemat(tmp_path / "lists" / "test_list.mat", {"file_list": files, "annotation_list": anns, "labels": np.array([1, 2])})
    _voc(tmp_path / "Annotation" / "n02085620-Chihuahua" / "n02085620_1", [("Chihuahua", [10, 20, 100, 200])])
    _voc(tmp_path / "Annotation" / "n02085782-Japanese_spaniel" / "n02085782_2",
         [("Japanese_spaniel", [1, 2, 3, 4]), ("Japanese_spaniel", [5, 6, 7, 8])])
    index = load_dataset("dogs", tmp_path, "test")
    assert [s.label for s in index.samples] == [0, 1]
    assert index.samples[1].class_names == ("japanese spaniel",)
    assert index.samples[1].gt_boxes.tolist() == [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]


def test_imagenet_val(tmp_path: Path) -> None:
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    ann = tmp_path / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    _voc(ann / "ILSVRC2012_val_00000001.xml", [("n01443537", [1, 2, 30, 40]), ("n01443537", [5, 5, 9, 9])])
    _voc(ann / "ILSVRC2012_val_00000002.xml", [("n09999999", [1, 2, 3, 4])])
    (tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val").mkdir(parents=True)
    index = load_dataset("imagenet", tmp_path, "val")
    assert len(index.samples) == 1 and "n09999999" in index.skipped[0]
    sample = index.samples[0]
    assert sample.label == 1 and sample.class_names == ("goldfish", "Carassius auratus")
    assert sample.gt_boxes.shape == (2, 4)
    assert sample.image_path.name == "ILSVRC2012_val_00000001.JPEG"


# ----------------------------------------------------------------------------- CocoGlide


def test_cocoglide(tmp_path: Path) -> None:
    root = tmp_path / "CocoGlide"
    _image(root / "fake" / "glide_inpainting_val2017_42_up.png", 8, 6)
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:6] = 255
    (root / "mask").mkdir()
    Image.fromarray(mask).save(root / "mask" / "fire hydrant_42_mask.png")
    Image.fromarray(mask).save(root / "mask" / "cat_99_mask.png")  # no fake image → skipped
    index = load_dataset("cocoglide", tmp_path)
    assert [(s.image_id, s.label) for s in index.samples] == [("42", "fire hydrant")]
    assert len(index.skipped) == 1 and "99" in index.skipped[0]
    loaded = load_mask(index.samples[0].mask_path)
    assert loaded.dtype == torch.bool and int(loaded.sum()) == 8 and bool(loaded[1, 2])


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("nope", ".")
