"""ZSGNet's zero-shot grounding CSVs (Flickr30k and Visual Genome splits)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.flickr30k import FLICKR_SENTENCES
from wwbl.errors import MissingResourceError
from wwbl.readers import acc_threshold, load_dataset


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
