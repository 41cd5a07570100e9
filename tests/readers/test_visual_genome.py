"""The Visual Genome reader: grounding samples and split files."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

from tests.helpers.images import flat_image_file
from wwbl.readers import load_dataset


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
    flat_image_file(tmp_path / "VG_Images" / "7.jpg", 80, 60)
    index = load_dataset("vg", tmp_path, "test", text_prefix="image of ")
    assert [s.phrases for s in index.samples] == [["image of a red car"]]
    assert index.samples[0].gt_boxes.tolist() == [[10.0, 5.0, 50.0, 35.0]]
    assert index.samples[0].item_id == "7/70"
    assert len(index.skipped) == 1 and "region 2" in index.skipped[0]
