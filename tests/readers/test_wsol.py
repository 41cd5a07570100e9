"""The other WSOL readers: Stanford Cars, Stanford Dogs and ImageNet val."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import savemat

from wwbl.readers import load_dataset


def test_stanford_cars_mat(tmp_path: Path) -> None:
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
