"""Every benchmark reader against malformed input: a bad item is reported (one ``skipped`` line naming it)
and left out while the rest loads; a bad whole file raises one AnnotationError naming the file.

Each case starts from a valid fixture of ``N`` items, damages one, and checks ``N - 1`` samples (or ``N``
when the damage only repeats an item) and a skipped line naming the damaged item.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from tests.helpers.images import flat_image_file
from wwbl.errors import AnnotationError
from wwbl.readers import load_dataset

N = 4


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _named(skipped: list[str], *needles: str) -> bool:
    return any(all(n in line for n in needles) for line in skipped)


# ----------------------------------------------------------------------------- Flickr30k Entities


def _flickr_xml(box: tuple = (11, 11, 61, 51), size: tuple = ("100", "80")) -> str:
    x1, y1, x2, y2 = box
    return (f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size><object><name>7</name>"
            f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>")


def _flickr(root: Path) -> Path:
    for i in range(1, N + 1):
        _write(root / "Annotations" / f"{i}.xml", _flickr_xml())
        _write(root / "Sentences" / f"{i}.txt", f"[/EN#7/other a thing {i}] here .\n")
    (root / "flickr30k_images").mkdir()
    _write(root / "test.txt", "".join(f"{i}\n" for i in range(1, N + 1)))
    return root


FLICKR_DAMAGE: dict[str, tuple[str, bytes | str]] = {
    "empty xml": ("Annotations/3.xml", ""),
    "truncated xml": ("Annotations/3.xml", _flickr_xml()[:70]),
    "not xml": ("Annotations/3.xml", b"\x89PNG\r\n\x1a\n\x00\x00"),
    "xml not utf-8": ("Annotations/3.xml", _flickr_xml().replace("<object>", "<object><name>\xff\xfe</name>")
                      .encode("latin-1")),
    "size zero": ("Annotations/3.xml", _flickr_xml(size=("0", "80"))),
    "size a string": ("Annotations/3.xml", _flickr_xml(size=("wide", "80"))),
    "size missing": ("Annotations/3.xml", "<annotation><object><name>7</name></object></annotation>"),
    "box not numbers": ("Annotations/3.xml", _flickr_xml(box=("a", 11, 61, 51))),
    "box NaN": ("Annotations/3.xml", _flickr_xml(box=("nan", 11, 61, 51))),
    "box inverted": ("Annotations/3.xml", _flickr_xml(box=(61, 11, 11, 51))),
    "sentences empty": ("Sentences/3.txt", ""),
    "sentences not utf-8": ("Sentences/3.txt", b"[/EN#7/other a \xff thing] .\n"),
    "sentences truncated": ("Sentences/3.txt", "[/EN#7/other a thi"),
}


@pytest.mark.parametrize("damage", FLICKR_DAMAGE)
def test_flickr30k_bad_image_files_skip_that_image(tmp_path: Path, damage: str) -> None:
    root = _flickr(tmp_path)
    relative, data = FLICKR_DAMAGE[damage]
    _write(root / relative, data)
    index = load_dataset("flickr30k", root, "test")
    assert sorted(s.image_id for s in index.samples) == ["1", "2", "4"]
    assert len(index.skipped) == 1 and index.skipped[0].startswith("3")


def test_flickr30k_image_listed_twice_is_kept_once(tmp_path: Path) -> None:
    root = _flickr(tmp_path)
    _write(root / "test.txt", "1\n2\n3\n4\n3\n")
    index = load_dataset("flickr30k", root, "test")
    assert len(index.samples) == N and [s.item_id for s in index.samples].count("3/7") == 1
    assert len(index.skipped) == 1 and _named(index.skipped, "duplicate", "item 3/7")


@pytest.mark.parametrize("content, needle", [(b"1\n2\xff\n", "line 2"), (b"\n \n", "no image ids")])
def test_flickr30k_bad_split_list_names_the_file(tmp_path: Path, content: bytes, needle: str) -> None:
    root = _flickr(tmp_path)
    _write(root / "test.txt", content)
    with pytest.raises(AnnotationError, match=f"test.txt.*{needle}"):
        load_dataset("flickr30k", root, "test")


# ----------------------------------------------------------------------------- ReferIt


def _referit(root: Path, annotations: dict) -> Path:
    _write(root / "annotations" / "test.json", json.dumps(annotations))
    for key in annotations:
        if key.isdigit():
            flat_image_file(root / "ReferIt_Images" / "01" / "images" / f"{key}.jpg", 100, 80)
    return root


def _referit_table() -> dict:
    return {str(1000 + i): {"annotations": [{"query": f"thing {i}", "bbox": [[0, 0, 60, 50]]}]} for i in range(N)}


REFERIT_ANNOTATION_DAMAGE = {
    "bbox strings": {"query": "q", "bbox": [["0", "0", "60", "50"]]},
    "bbox null": {"query": "q", "bbox": None},
    "bbox NaN": {"query": "q", "bbox": [[float("nan"), 0, 60, 50]]},
    "bbox booleans": {"query": "q", "bbox": [[True, 0, 60, 50]]},
    "bbox inverted": {"query": "q", "bbox": [[60, 0, 0, 50]]},
    "bbox three numbers": {"query": "q", "bbox": [[0, 0, 60]]},
    "query null": {"query": None, "bbox": [[0, 0, 60, 50]]},
    "query missing": {"bbox": [[0, 0, 60, 50]]},
    "not an object": "just text",
}


@pytest.mark.parametrize("damage", REFERIT_ANNOTATION_DAMAGE)
def test_referit_bad_annotation_is_skipped_alone(tmp_path: Path, damage: str) -> None:
    table = _referit_table()
    table["1002"]["annotations"].append(REFERIT_ANNOTATION_DAMAGE[damage])  # beside a good one
    index = load_dataset("referit", _referit(tmp_path, table), "test")
    assert len(index.samples) == N and "1002/0" in {s.item_id for s in index.samples}
    assert len(index.skipped) == 1 and _named(index.skipped, "'1002' annotation 1")


@pytest.mark.parametrize("entry", [{"annotations": "none"}, ["a list"], None])
def test_referit_bad_entry_skips_its_image(tmp_path: Path, entry: object) -> None:
    table = _referit_table()
    table["1002"] = entry
    index = load_dataset("referit", _referit(tmp_path, table), "test")
    assert len(index.samples) == N - 1 and len(index.skipped) == 1 and _named(index.skipped, "1002")


def test_referit_non_integer_id_and_missing_image_are_skipped(tmp_path: Path) -> None:
    table = _referit_table()
    table["abc"] = table["1001"]
    root = _referit(tmp_path, table)
    (root / "ReferIt_Images" / "01" / "images" / "1003.jpg").unlink()
    index = load_dataset("referit", root, "test")
    assert len(index.samples) == N - 1
    assert _named(index.skipped, "'abc'", "not an integer") and _named(index.skipped, "1003.jpg")


@pytest.mark.parametrize("text, needle", [
    ('{"1000": {"annotations": []}, "1000": {"annotations": []}}', "'1000' appears twice"),
    ('{"1000": {"annotations": [', "not valid JSON"),
    ('[1, 2]', "must be a dict"),
])
def test_referit_bad_table_names_the_file(tmp_path: Path, text: str, needle: str) -> None:
    root = _referit(tmp_path, _referit_table())
    _write(root / "annotations" / "test.json", text)
    with pytest.raises(AnnotationError, match=needle) as raised:
        load_dataset("referit", root, "test")
    assert "test" in str(raised.value) and "\n" not in str(raised.value)


# ----------------------------------------------------------------------------- Visual Genome


def _vg(root: Path, regions: list, image_data: list | None = None) -> Path:
    ann = root / "VG_Annotations"
    _write(ann / "region_descriptions.json", json.dumps(regions))
    _write(ann / "data_splits.json", json.dumps({"train": [], "test": [e["id"] for e in regions]}))
    if image_data is not None:
        _write(ann / "image_data.json", json.dumps(image_data))
    for entry in regions:
        flat_image_file(root / "VG_Images" / f"{entry['id']}.jpg", 100, 80)
    return root


def _vg_region(region_id: int, **changes: object) -> dict:
    region = {"region_id": region_id, "phrase": f"thing {region_id}", "x": 5, "y": 5, "width": 60, "height": 50}
    region.update(changes)
    return {k: v for k, v in region.items() if v != "DROP"}


def _vg_regions() -> list:
    return [{"id": i, "regions": [_vg_region(10 * i)]} for i in range(1, N + 1)]


VG_REGION_DAMAGE = {
    "x a string": {"x": "5"}, "width null": {"width": None}, "height NaN": {"height": float("nan")},
    "width negative": {"width": -60}, "x boolean": {"x": True}, "phrase missing": {"phrase": "DROP"},
    "phrase null": {"phrase": None}, "phrase blank": {"phrase": "  "}, "y missing": {"y": "DROP"},
}


@pytest.mark.parametrize("damage", VG_REGION_DAMAGE)
def test_visual_genome_bad_region_is_skipped_alone(tmp_path: Path, damage: str) -> None:
    regions = _vg_regions()
    regions[2]["regions"].append(_vg_region(99, **VG_REGION_DAMAGE[damage]))
    index = load_dataset("vg", _vg(tmp_path, regions), "test")
    assert len(index.samples) == N and "3/30" in {s.item_id for s in index.samples}
    assert len(index.skipped) == 1 and _named(index.skipped, "image 3 region 1")


def test_visual_genome_repeated_region_id_counts_once(tmp_path: Path) -> None:
    regions = _vg_regions()
    regions[2]["regions"].append(_vg_region(30, phrase="the same id again"))
    index = load_dataset("vg", _vg(tmp_path, regions), "test")
    assert [s.item_id for s in index.samples].count("3/30") == 1 and len(index.samples) == N
    assert len(index.skipped) == 1 and _named(index.skipped, "duplicate", "item 3/30")


def test_visual_genome_regions_not_a_list_skips_the_image(tmp_path: Path) -> None:
    regions = _vg_regions()
    regions[1]["regions"] = "abc"
    index = load_dataset("vg", _vg(tmp_path, regions), "test")
    assert len(index.samples) == N - 1 and _named(index.skipped, "image 2", "not a list")


@pytest.mark.parametrize("image_data, needle", [
    ([{"image_id": 1, "width": 100, "height": 0}], "entry 0.*positive"),
    ([{"image_id": 1, "width": "100", "height": 80.5}], "entry 0.*positive"),
    ([{"image_id": 1, "width": 100}], "entry 0.*height"),
    ({"image_id": 1}, "must hold a list"),
])
def test_visual_genome_bad_image_data_names_file_and_entry(tmp_path: Path, image_data, needle: str) -> None:
    with pytest.raises(AnnotationError, match=f"image_data.json.*{needle}"):
        load_dataset("vg", _vg(tmp_path, _vg_regions(), image_data), "test")


def test_visual_genome_truncated_regions_file_names_it(tmp_path: Path) -> None:
    root = _vg(tmp_path, _vg_regions())
    path = root / "VG_Annotations" / "region_descriptions.json"
    path.write_text(path.read_text()[:40])
    with pytest.raises(AnnotationError, match="region_descriptions.json.*not valid JSON"):
        load_dataset("vg", root, "test")


# ----------------------------------------------------------------------------- CUB-200-2011


def _cub(root: Path, boxes: list[str]) -> Path:
    _write(root / "images.txt", "".join(f"{i} 001.A/{i}.jpg\n" for i in range(1, N + 1)))
    _write(root / "image_class_labels.txt", "".join(f"{i} 1\n" for i in range(1, N + 1)))
    _write(root / "classes.txt", "1 001.A\n")
    _write(root / "train_test_split.txt", "".join(f"{i} 0\n" for i in range(1, N + 1)))
    _write(root / "bounding_boxes.txt", "".join(f"{i} {b}\n" for i, b in enumerate(boxes, start=1)))
    return root


@pytest.mark.parametrize("box", ["a 4 30 20", "nan 4 30 20", "4 4 nan 20", "4 4 0 20", "4 4 30 -2"])
def test_cub_bad_box_skips_that_image(tmp_path: Path, box: str) -> None:
    boxes = ["4 4 30 20"] * N
    boxes[1] = box
    index = load_dataset("cub", _cub(tmp_path, boxes), "test")
    assert [s.image_id for s in index.samples] == ["1", "3", "4"]
    assert len(index.skipped) == 1 and index.skipped[0].startswith("2:")


@pytest.mark.parametrize("content, needle", [(b"1 001.A/1.jpg\n2 001.A/\xff.jpg\n", "line 2: not UTF-8"),
                                             (b"", "is empty"), (b"1 001.A/1.jpg\n\xc2\xb2 x.jpg\n", "line 2")])
def test_cub_bad_table_names_the_file(tmp_path: Path, content: bytes, needle: str) -> None:
    root = _cub(tmp_path, ["4 4 30 20"] * N)
    _write(root / "images.txt", content)
    with pytest.raises(AnnotationError, match=f"images.txt.*{needle}"):
        load_dataset("cub", root, "test")


# ----------------------------------------------------------------------------- ImageNet, Dogs, Cars


def _voc(box: tuple = (1, 2, 30, 40), synset: str = "n01") -> str:
    return (f"<annotation><object><name>{synset}</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
            f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>")


IMAGENET_DAMAGE = {"empty": "", "truncated": _voc()[:50], "not xml": b"\x00\x01\x02", "no box": "<annotation/>",
                   "box NaN": _voc(box=("nan", 2, 30, 40)), "box inverted": _voc(box=(30, 2, 1, 40)),
                   "box a string": _voc(box=("left", 2, 30, 40)), "unknown class": _voc(synset="n99")}


@pytest.mark.parametrize("damage", IMAGENET_DAMAGE)
def test_imagenet_bad_xml_skips_that_image(tmp_path: Path, damage: str) -> None:
    _write(tmp_path / "LOC_synset_mapping.txt", "n01 tench, Tinca tinca\n")
    ann = tmp_path / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    for i in range(1, N + 1):
        _write(ann / f"v{i}.xml", _voc())
    _write(ann / "v2.xml", IMAGENET_DAMAGE[damage])
    (tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val").mkdir(parents=True)
    index = load_dataset("imagenet", tmp_path, "val")
    assert [s.image_id for s in index.samples] == ["v1", "v3", "v4"]
    assert len(index.skipped) == 1 and index.skipped[0].startswith("v2:")


@pytest.mark.parametrize("content", [b"n01 tench\nn02 \xff\n", b"n01\n", b"n01 tench\nn01 tench again\n"])
def test_imagenet_bad_synset_mapping_names_the_file(tmp_path: Path, content: bytes) -> None:
    _write(tmp_path / "LOC_synset_mapping.txt", content)
    with pytest.raises(AnnotationError, match="LOC_synset_mapping.txt' line"):
        load_dataset("imagenet", tmp_path, "val")


def test_stanford_dogs_file_listed_twice_is_kept_once(tmp_path: Path) -> None:
    files = np.array(["n1-Pug/a.jpg", "n1-Pug/b.jpg", "n1-Pug/a.jpg"], dtype=object)
    annotations = np.array(["n1-Pug/a", "n1-Pug/b", "n1-Pug/a"], dtype=object)
    (tmp_path / "lists").mkdir()
    savemat(tmp_path / "lists" / "test_list.mat",
            {"file_list": files, "annotation_list": annotations, "labels": np.array([1, 1, 1])})
    (tmp_path / "Images").mkdir()
    for name in ("a", "b"):
        _write(tmp_path / "Annotation" / "n1-Pug" / name, _voc())
    index = load_dataset("dogs", tmp_path, "test")
    assert [s.image_id for s in index.samples] == ["a", "b"]
    assert len(index.skipped) == 1 and _named(index.skipped, "duplicate image a")


def _cars(root: Path, rows: list[tuple]) -> Path:
    (root / "devkit").mkdir(parents=True)
    (root / "cars_test").mkdir()
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array(["Hummer", "Acura"], dtype=object)})
    dtype = [(k, "O") for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    savemat(root / "cars_test_annos_withlabels.mat", {"annotations": np.array(rows, dtype=dtype)[None]})
    return root


@pytest.mark.parametrize("bad", [(1, 1, 50, 40, "two", "3.jpg"), (1, 1, "wide", 40, 1, "3.jpg"),
                                 (50, 1, 1, 40, 1, "3.jpg"), (1, 1, 50, 40, 1, " ")])
def test_stanford_cars_bad_record_skips_it(tmp_path: Path, bad: tuple) -> None:
    rows = [(1, 1, 50, 40, 1, f"{i}.jpg") for i in range(1, N + 1)]
    rows[2] = bad
    index = load_dataset("cars", _cars(tmp_path, rows), "test")
    assert [s.image_id for s in index.samples] == ["1", "2", "4"]
    assert len(index.skipped) == 1 and _named(index.skipped, "annotations(3)")


def test_stanford_cars_meta_without_class_names_names_the_file(tmp_path: Path) -> None:
    root = _cars(tmp_path, [(1, 1, 50, 40, 1, "1.jpg")])
    savemat(root / "devkit" / "cars_meta.mat", {"other": np.array([1])})
    with pytest.raises(AnnotationError, match="cars_meta.mat' has no variable 'class_names'"):
        load_dataset("cars", root, "test")


# ----------------------------------------------------------------------------- ZSGNet CSVs


ZSG_ROW_DAMAGE = {"bbox a word": '"[1, 2, \'x\', 4]"', "bbox None": "None", "bbox three": '"[1, 2, 3]"',
                  "bbox inverted": '"[30, 2, 1, 40]"', "bbox empty": '""', "bbox call": '"__import__(\'os\')"',
                  "bbox infinite": '"[1e999, 2, 3, 4]"'}


def _zsg_csv(root: Path, rows: list[str]) -> Path:
    _write(root / "ds_csv_ann" / "flickr30k_c0" / "csv_dir" / "test.csv",
           ("img_id,bbox,query\n" + "".join(rows)).encode("utf-8", "surrogateescape"))
    (root / "flickr" / "flickr30k_images").mkdir(parents=True, exist_ok=True)
    return root


def _zsg_rows() -> list[str]:
    return [f'{i},"[1, 2, 30, 40]",thing {i}\n' for i in range(1, N + 1)]


@pytest.mark.parametrize("damage", ZSG_ROW_DAMAGE)
def test_zsgnet_bad_bbox_skips_that_row(tmp_path: Path, damage: str) -> None:
    rows = _zsg_rows()
    rows[2] = f"3,{ZSG_ROW_DAMAGE[damage]},thing 3\n"
    index = load_dataset("zsg_flickr_s0", _zsg_csv(tmp_path, rows), "test")
    assert [s.item_id for s in index.samples] == ["row0", "row1", "row3"]
    assert len(index.skipped) == 1 and _named(index.skipped, "row2")


@pytest.mark.parametrize("row", ['3,"[1, 2, 30, 40]","[]"\n', '3,"[1, 2, 30, 40]","[1, 2]"\n', "3\n",
                                 '3,"[1, 2, 30, 40]",th\udcffing\n', '3,"[1, 2, 30, 40]",\n'])
def test_zsgnet_bad_query_or_short_row_skips_it(tmp_path: Path, row: str) -> None:
    rows = _zsg_rows()
    rows[2] = row
    index = load_dataset("zsg_flickr_s0", _zsg_csv(tmp_path, rows), "test")
    assert [s.item_id for s in index.samples] == ["row0", "row1", "row3"]
    assert len(index.skipped) == 1 and _named(index.skipped, "row2")


def test_zsgnet_csv_without_columns_names_the_file(tmp_path: Path) -> None:
    root = _zsg_csv(tmp_path, [])
    _write(root / "ds_csv_ann" / "flickr30k_c0" / "csv_dir" / "test.csv", "image,box\n1,2\n")
    with pytest.raises(AnnotationError, match="test.csv' header"):
        load_dataset("zsg_flickr_s0", root, "test")


# ----------------------------------------------------------------------------- CocoGlide


@pytest.mark.parametrize("name, needle", [("dog_2_mask.png", "duplicate image 2"), ("__3_mask.png", "no category"),
                                          ("dog_mask.png", "is not"), ("dog_9_mask.png", "fake image")])
def test_cocoglide_bad_mask_names_are_skipped(tmp_path: Path, name: str, needle: str) -> None:
    for i in range(1, N + 1):
        flat_image_file(tmp_path / "fake" / f"glide_inpainting_val2017_{i}_up.png", 8, 8)
        flat_image_file(tmp_path / "mask" / f"cat_{i}_mask.png", 8, 8, "L")
    flat_image_file(tmp_path / "mask" / name, 8, 8, "L")
    index = load_dataset("cocoglide", tmp_path)
    assert sorted(s.image_id for s in index.samples) == ["1", "2", "3", "4"]
    assert len(index.skipped) == 1 and _named(index.skipped, needle)


# ----------------------------------------------------------------------------- shared


def test_every_loader_is_covered() -> None:
    from wwbl.readers import LOADERS

    covered = {"flickr30k", "referit", "vg", "cub", "imagenet", "dogs", "cars", "cocoglide"}
    covered |= {name for name in LOADERS if name.startswith("zsg_")}  # one CSV reader behind all splits
    assert set(LOADERS) == covered

