"""Flickr30k Entities: the evaluation protocol on a hand-made fixture in the publisher's format."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.flickr30k import FLICKR_SENTENCES, FLICKR_XML
from wwbl.errors import MissingResourceError
from wwbl.readers import load_dataset


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
