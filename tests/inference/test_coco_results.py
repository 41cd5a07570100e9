"""COCO results that pycocotools loads and scores against a hand-made ground truth as they are."""
import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wwbl.boxes import Detections
from wwbl.inference.coco_results import PHRASE_CATEGORY_ID, CocoIds, coco_records, write_coco_results
from wwbl.inference.results import GroundingResult

ROOT = Path(__file__).resolve().parents[2]

# Two images, two categories; boxes in COCO xywh.
GT = {
    "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 100, "width": 120},
               {"id": 7, "file_name": "val/park.jpg", "height": 80, "width": 90}],
    "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "Cat"}],
    "annotations": [{"id": 1, "image_id": 139, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0},
                    {"id": 2, "image_id": 7, "category_id": 2, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0}],
}
# The same boxes as wwbl's xyxy.
DOG_XYXY, CAT_XYXY = [10, 10, 50, 40], [5, 5, 25, 25]


def _result(boxes, phrases, scores=None) -> GroundingResult:
    scores = scores or [0.9] * len(boxes)
    return GroundingResult((100, 120), sorted(set(phrases)), torch.zeros(len(set(phrases)), 100, 120),
                           Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), phrases))


def _evaluate(tmp_path: Path, records: list, class_agnostic: bool = False, gt_data: dict = GT) -> float:
    """pycocotools' own AP@[.5:.95] of ``records`` (written and read back as a results file)."""
    (tmp_path / "gt.json").write_text(json.dumps(gt_data))
    write_coco_results(tmp_path / "res.json", records)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        evaluation = COCOeval(gt, gt.loadRes(str(tmp_path / "res.json")), "bbox")
        if class_agnostic:  # the recipe of wwbl.inference.coco_results' docstring
            evaluation.params.useCats = 0
            evaluation.params.catIds = gt.getCatIds() + [PHRASE_CATEGORY_ID]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def _records(ids: CocoIds, dog: list, cat: list, dog_phrase="a dog", cat_phrase="the cat") -> list:
    return (coco_records(_result([dog], [dog_phrase]), ids.image_id("photos/000000000139.jpg"), ids)
            + coco_records(_result([cat], [cat_phrase]), ids.image_id("data/val/park.jpg"), ids))


def test_exact_boxes_score_ap_one_and_disjoint_boxes_zero(tmp_path):
    ids = CocoIds.from_ground_truth(GT)
    records = _records(ids, DOG_XYXY, CAT_XYXY)
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in records] == [
        (139, 1, [10, 10, 40, 30]), (7, 2, [5, 5, 20, 20])]
    assert [r["phrase"] for r in records] == ["a dog", "the cat"]
    assert _evaluate(tmp_path, records) == pytest.approx(1.0)
    assert _evaluate(tmp_path, _records(ids, [60, 50, 100, 90], [40, 40, 80, 70])) == pytest.approx(0.0)


def test_phrases_without_a_category_get_the_phrase_category(tmp_path):
    ids = CocoIds.from_ground_truth(GT)
    records = _records(ids, DOG_XYXY, CAT_XYXY, dog_phrase="a brown animal", cat_phrase="a small animal")
    assert {r["category_id"] for r in records} == {PHRASE_CATEGORY_ID}
    assert _evaluate(tmp_path, records) == pytest.approx(0.0)  # no GT category has such detections
    assert _evaluate(tmp_path, records, class_agnostic=True) == pytest.approx(1.0)  # every box is right


def test_a_gt_category_named_phrase_takes_the_free_phrases(tmp_path):
    gt = {**GT, "categories": [{"id": 3, "name": "phrase"}],
          "annotations": [{**a, "category_id": 3} for a in GT["annotations"]]}
    records = _records(CocoIds.from_ground_truth(gt), DOG_XYXY, CAT_XYXY, dog_phrase="a brown animal")
    assert {r["category_id"] for r in records} == {3}
    assert _evaluate(tmp_path, records, gt_data=gt) == pytest.approx(1.0)


def test_swapped_categories_score_zero_although_the_boxes_are_right(tmp_path):
    records = _records(CocoIds.from_ground_truth(GT), DOG_XYXY, CAT_XYXY, dog_phrase="cat", cat_phrase="dog")
    assert _evaluate(tmp_path, records) == pytest.approx(0.0)


def test_gt_file_is_read_from_disk_and_unknown_images_are_refused(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    ids = CocoIds.from_ground_truth(tmp_path / "gt.json")
    assert ids.image_id(tmp_path / "000000000139.jpg") == 139
    with pytest.raises(ValueError, match="is not an image of"):
        ids.image_id("elsewhere/unknown.jpg")
    with pytest.raises(FileNotFoundError):
        CocoIds.from_ground_truth(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="'images'"):
        CocoIds.from_ground_truth({"annotations": []})


def test_same_file_name_in_two_folders_is_told_apart_by_the_path():
    ids = CocoIds.from_ground_truth({"images": [{"id": 1, "file_name": "a/x.jpg"}, {"id": 2, "file_name": "b/x.jpg"}]})
    assert ids.image_id("/data/b/x.jpg") == 2 and ids.image_id("a/x.jpg") == 1
    with pytest.raises(ValueError, match="matches several"):
        ids.image_id("c/x.jpg")


def test_phrase_category_stays_clear_of_a_gt_category_zero():
    ids = CocoIds(images=[], categories=[{"id": 0, "name": "person"}, {"id": 4, "name": "dog"}])
    assert ids.category_id("A  Person") == 0 and ids.category_id("a dog") == 4 and ids.category_id("a tree") == 5


def test_without_gt_ids_come_from_file_stems():
    ids = CocoIds()
    assert ids.image_id("photos/000000000139.jpg") == 139 and ids.image_id("photos/park.jpg") == "park"
    assert ids.image_id("photos/park.jpg", stem="park_1") == "park_1"
    assert ids.category_id("a dog") == PHRASE_CATEGORY_ID


# -- infer.py --coco-gt ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def infer_setup(tmp_path_factory, infer):
    from PIL import Image

    from wwbl.clip import FrozenCLIP
    from wwbl.export import export_grounding_net
    from wwbl.networks import GroundingNet

    root = tmp_path_factory.mktemp("coco_cli")
    torch.manual_seed(0)
    text_dim = FrozenCLIP("wwbl-tiny-vit", pretrained="random").embed_dim
    net = GroundingNet(text_dim=text_dim, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False)
    export_grounding_net(net, str(root / "g"), {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None},
                         extra={"input_size": 48, "text_prefix": ""})
    (root / "images" / "val").mkdir(parents=True)
    Image.new("RGB", (120, 100), (200, 30, 30)).save(root / "images" / "000000000139.jpg")
    Image.new("RGB", (90, 80), (30, 200, 30)).save(root / "images" / "val" / "park.jpg")
    (root / "gt.json").write_text(json.dumps(GT))
    return infer, root


def test_infer_writes_results_pycocotools_evaluates(infer_setup, tmp_path):
    infer, root = infer_setup
    out = tmp_path / "out"
    code = infer.main(["--image", str(root / "images" / "000000000139.jpg"), "--image", str(root / "images" / "val"),
                       "--phrase", "a dog", "--phrase", "a tree", "--checkpoint", str(root / "g"),
                       "--coco-gt", str(root / "gt.json"), "--out", str(out), "--quiet"])
    assert code == 0
    records = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in records} == {139, 7}
    assert {(r["phrase"], r["category_id"]) for r in records} == {("a dog", 1), ("a tree", PHRASE_CATEGORY_ID)}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "gt.json"))
        evaluation = COCOeval(gt, gt.loadRes(str(out / "coco_results.json")), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert 0.0 <= evaluation.stats[0] <= 1.0


def test_infer_refuses_images_the_gt_does_not_list_before_running(infer_setup, tmp_path, capsys):
    infer, root = infer_setup
    gt = {**GT, "images": GT["images"][:1]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    code = infer.main(["--image", str(root / "images" / "val"), "--phrase", "a dog", "--checkpoint", str(root / "g"),
                       "--coco-gt", str(tmp_path / "gt.json"), "--out", str(tmp_path / "out")])
    assert code == 2 and "park.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
