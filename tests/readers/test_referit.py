"""ReferIt on hand-made fixtures (pickle and JSON annotations)."""
from __future__ import annotations

import collections
import json
import pickle
from pathlib import Path

import pytest

from tests.helpers.images import flat_image_file
from wwbl.errors import AnnotationError
from wwbl.readers import load_dataset


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
    flat_image_file(root / "ReferIt_Images" / "01" / "images" / "1500.jpg", 100, 80)
    flat_image_file(root / "ReferIt_Images" / "01" / "images" / "1501.jpg", 100, 80)
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
