"""Visual Genome regions for training: split and phrase rules, split files, named errors."""
import json

import pytest

from tests.helpers.training_layouts import write_visual_genome
from wwbl.data import VisualGenomeRegions
from wwbl.data.transforms import grounding_train_transform
from wwbl.errors import AnnotationError, MissingResourceError
from wwbl.readers.visual_genome import read_split_file


TF = grounding_train_transform(32, hflip_p=0.5)


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


def test_visual_genome_unknown_ids_and_missing_files(tmp_path):
    with pytest.raises(MissingResourceError, match="data_splits.pickle"):
        VisualGenomeRegions(str(tmp_path), TF)
    write_visual_genome(tmp_path)
    (tmp_path / "ids.txt").write_text("1\n99\n")
    with pytest.raises(AnnotationError, match="99"):
        VisualGenomeRegions(str(tmp_path), TF, split_file=str(tmp_path / "ids.txt"))
