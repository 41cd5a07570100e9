"""The CUB-200-2011 WSOL reader on a hand-made fixture."""
from __future__ import annotations

from pathlib import Path

from wwbl.readers import load_dataset


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
