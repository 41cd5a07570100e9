"""The evaluation command on small fixture datasets with tiny random CLIP models."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.tiny_blip import save_tiny_blip
from wwbl.boxes import Detections
from wwbl.evaluation.__main__ import main
from wwbl.evaluation.evaluate import EvalSettings, run_evaluation
from wwbl.extractors.base import HeatmapExtractor

TINY = ["--clip-model", "wwbl-tiny-vit", "--clip-pretrained", "random", "--no-progress"]
# Flickr30k fixture: image id → (width, height, {entity: (0-based box, mention)}).
ENTITIES = {
    "1": (60, 40, {"1": ([5, 5, 30, 30], "a red ball"), "2": ([35, 5, 55, 35], "a blue cup")}),
    "2": (50, 70, {"3": ([0, 0, 40, 60], "the tall man")}),
}


def _flickr(root: Path) -> Path:
    for sub in ("Annotations", "Sentences", "flickr30k_images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (w, h, entities) in ENTITIES.items():
        objects = "".join(f"<object><name>{e}</name><bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin>"
                          f"<xmax>{b[2] + 1}</xmax><ymax>{b[3] + 1}</ymax></bndbox></object>"
                          for e, (b, _) in entities.items())
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height></size>{objects}</annotation>")
        sentence = " and ".join(f"[/EN#{e}/other {text}]" for e, (_, text) in entities.items())
        (root / "Sentences" / f"{image_id}.txt").write_text(sentence + " .\n")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "flickr30k_images" / f"{image_id}.jpg")
    (root / "Annotations" / "3.xml").write_text(
        "<annotation><size><width>40</width><height>40</height></size><object><name>4</name><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>")
    (root / "Sentences" / "3.txt").write_text("[/EN#4/other a broken image] .\n")
    (root / "flickr30k_images" / "3.jpg").write_bytes(b"not an image")
    (root / "test.txt").write_text("1\n2\n3\n")
    return root


def _gt_union(image_id: str, entity: str) -> list[float]:
    return ENTITIES[image_id][2][entity][0]


def _iou(a, b) -> float:
    iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def _run(args: list[str], seed: int = 0) -> None:
    torch.manual_seed(seed)  # the tiny CLIP is random: the same seed gives the same model
    assert main(args) == 0


def test_wsg_gae_resume_and_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, out = _flickr(tmp_path / "flickr"), tmp_path / "run"
    args = ["wsg", "--dataset", "flickr30k", "--root", str(root), "--method", "gae", "--out", str(out),
            "--batch-size", "2", *TINY]
    _run(args)
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == 2 and results["images_total"] == 3
    assert any(line.startswith("3:") for line in json.loads((out / "skipped.json").read_text()))

    # The metrics agree with an independent computation from the per-image records.
    hits, correct, items = 0, 0, 0
    for record in _records(out):
        for item_id, entry in record["items"].items():
            image_id, entity = item_id.split("/")
            x1, y1, x2, y2 = _gt_union(image_id, entity)
            row, col = entry["point"]
            hits += x1 <= col <= x2 and y1 <= row <= y2
            boxes = entry["boxes"]
            union = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                     max(b[3] for b in boxes)] if boxes else None
            correct += union is not None and _iou(union, [x1, y1, x2, y2]) >= 0.5
            items += 1
    assert items == 3 == results["metrics"]["items"]
    assert results["metrics"]["pointing"] == pytest.approx(hits / items)
    assert results["metrics"]["bbox_acc"] == pytest.approx(correct / items)

    table = list(csv.reader((out / "table_wsg.csv").open()))
    assert table[0] == ["Method", "Point Acc Flickr", "Bbox Acc Flickr"]
    assert table[1] == ["gae", f"{100 * hits / items:.2f}", f"{100 * correct / items:.2f}"]
    assert "Point Acc Flickr" in (out / "tables.md").read_text()

    # Resume: a rerun processes nothing new; a dropped record is redone and gives the same numbers.
    lines = (out / "records.jsonl").read_text().splitlines()
    _run(args)
    assert (out / "records.jsonl").read_text().splitlines() == lines
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    _run(args)
    redone = (out / "records.jsonl").read_text().splitlines()
    assert len(redone) == len(lines)
    again, before = json.loads(redone[-1])["items"], json.loads(lines[-1])["items"]
    for item_id, entry in before.items():  # alone vs in a batch: equal up to float noise in the scores
        assert again[item_id]["point"] == entry["point"] and again[item_id]["boxes"] == entry["boxes"]
        assert again[item_id]["scores"] == pytest.approx(entry["scores"], abs=1e-4)
    assert json.loads((out / "results.json").read_text())["metrics"] == results["metrics"]

    # Other settings in the same run directory are refused (exit status 2, one line) instead of mixing results.
    capsys.readouterr()
    assert main(args + ["--box-mode", "reference"]) == 2
    assert "different settings" in capsys.readouterr().err


class OracleExtractor(HeatmapExtractor):
    """Heatmaps that are exactly the GT region (box or mask) of each phrase; for protocol checks."""

    def __init__(self, clip, regions: dict[str, torch.Tensor]):
        super().__init__(clip)
        self.regions = regions

    def heatmaps(self, images, phrases):
        return [torch.stack([self.regions[p] for p in names]) for names in phrases]

    def _heatmaps_square(self, images, text_emb, image_index, phrases):
        raise AssertionError("not used")


def _box_map(h: int, w: int, box: list[int]) -> torch.Tensor:
    heatmap = torch.zeros(h, w)
    heatmap[box[1]: box[3], box[0]: box[2]] = 1.0
    return heatmap


def test_wsg_oracle_scores_perfectly(tmp_path: Path, tiny_clip) -> None:
    root = _flickr(tmp_path / "flickr")
    regions = {text: _box_map(h, w, box) for w, h, ents in ENTITIES.values() for box, text in ents.values()}
    settings = EvalSettings(task="wsg", dataset="flickr30k", root=str(root), out=str(tmp_path / "run"),
                            method="oracle", progress=False)
    metrics = run_evaluation(settings, extractor=OracleExtractor(tiny_clip, regions))["metrics"]
    # The oracle's map is the GT box: its argmax lies inside, wsg_boxes recovers the box (IoU 1).
    assert metrics["pointing"] == 1.0 and metrics["bbox_acc"] == 1.0 and metrics["acc_iou"] == 1.0


def test_wwbl_from_predictions_file_counts_misses(tmp_path: Path) -> None:
    root = _flickr(tmp_path / "flickr")
    predictions = tmp_path / "predictions.jsonl"
    # Image 1: "a red ball" points into its box; "a blue cup" points outside its box but has the
    # exact box. Image 2 has no prediction at all.
    predictions.write_text(json.dumps({"image_id": "1", "predictions": [
        {"caption": "a red ball", "point": [10, 10], "boxes": [[5, 5, 30, 30]], "scores": [1.0]},
        {"caption": "a blue cup", "point": [10, 10], "boxes": [[35, 5, 55, 35]], "scores": [1.0]},
    ]}) + "\n")
    common = ["wwbl", "--dataset", "flickr30k", "--root", str(root), "--predictions", str(predictions),
              "--match-prefix", "", *TINY]
    _run(common + ["--out", str(tmp_path / "miss")])
    metrics = json.loads((tmp_path / "miss" / "results.json").read_text())["metrics"]
    assert metrics["items"] == 3 and metrics["empty_images"] == 1
    assert metrics["pointing"] == pytest.approx(1 / 3) and metrics["bbox_acc"] == pytest.approx(2 / 3)
    _run(common + ["--out", str(tmp_path / "drop"), "--drop-empty"])
    metrics = json.loads((tmp_path / "drop" / "results.json").read_text())["metrics"]
    assert metrics["items"] == 2 and metrics["pointing"] == pytest.approx(1 / 2) and metrics["bbox_acc"] == 1.0
    assert (tmp_path / "drop" / "table_wwbl.csv").is_file()

    # A prediction may give its heatmap (.npy) instead of the argmax point: same numbers.
    heatmap = np.zeros((40, 60), np.float32)
    heatmap[10, 10] = 1.0
    np.save(tmp_path / "ball.npy", heatmap)
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    ball = rows[0]["predictions"][0]
    del ball["point"]
    ball["heatmap_npy"] = str(tmp_path / "ball.npy")
    predictions.write_text(json.dumps(rows[0]) + "\n")
    _run(common + ["--out", str(tmp_path / "npy")])
    assert json.loads((tmp_path / "npy" / "results.json").read_text())["metrics"]["pointing"] == pytest.approx(1 / 3)


def test_wsg_with_exported_g(tmp_path: Path) -> None:
    from wwbl.export import export_grounding_net
    from wwbl.networks import GroundingNet

    torch.manual_seed(1)
    net = GroundingNet(text_dim=32, vgg_width_div=16, pretrained_backbone=False).eval()
    spec = {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None}
    export_grounding_net(net, str(tmp_path / "g"), spec, extra={"input_size": 48, "text_prefix": "image of "})
    root, out = _flickr(tmp_path / "flickr"), tmp_path / "run"
    _run(["wsg", "--dataset", "flickr30k", "--root", str(root), "--checkpoint", str(tmp_path / "g"),
          "--out", str(out), "--no-progress"])
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "g (g)" and results["metrics"]["items"] == 3
    assert 0.0 <= results["metrics"]["pointing"] <= 1.0


def _cub(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    (root / "images" / "001.A").mkdir(parents=True)
    (root / "images" / "002.B").mkdir(parents=True)
    for name in ("001.A/a.jpg", "002.B/b.jpg"):
        Image.fromarray(rng.integers(0, 255, (36, 48, 3), dtype=np.uint8)).save(root / "images" / name)
    (root / "images.txt").write_text("1 001.A/a.jpg\n2 002.B/b.jpg\n")
    (root / "bounding_boxes.txt").write_text("1 4 4 30 20\n2 0 0 48 36\n")
    (root / "train_test_split.txt").write_text("1 0\n2 0\n")
    (root / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n")
    return root


def test_wsol_two_extractors_and_merged_table(tmp_path: Path) -> None:
    root = _cub(tmp_path / "cub")
    outs = []
    for method in ("gae", "gem"):
        out = tmp_path / method
        _run(["wsol", "--dataset", "cub", "--root", str(root), "--method", method, "--out", str(out), *TINY])
        results = json.loads((out / "results.json").read_text())
        gts = {"1": [4, 4, 34, 24], "2": [0, 0, 48, 36]}
        located = [max((_iou(b, gts[r["key"]]) for b in r["boxes"]), default=0.0) >= 0.5 for r in _records(out)]
        assert results["metrics"]["gt_known_loc"] == pytest.approx(sum(located) / 2)
        assert "top1_loc" in results["metrics"]  # zero-shot classification over the 2 classes
        outs.append(str(out))
    _run(["tables", *outs, "--out", str(tmp_path / "merged")])
    rows = list(csv.reader((tmp_path / "merged" / "table_wsol.csv").open()))
    assert rows[0] == ["Method", "GT-known Loc CUB"] and [r[0] for r in rows[1:]] == ["gae", "gem"]


def test_masks_oracle_and_gae(tmp_path: Path, tiny_clip) -> None:
    root = tmp_path / "CocoGlide"
    (root / "fake").mkdir(parents=True)
    (root / "mask").mkdir()
    mask = np.zeros((32, 40), np.uint8)
    mask[8:20, 10:30] = 255
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(root / "fake" / "glide_inpainting_val2017_5_up.png")
    Image.fromarray(mask).save(root / "mask" / "dog_5_mask.png")
    regions = {"an image of a dog.": torch.from_numpy(mask > 0).float()}
    settings = EvalSettings(task="masks", dataset="cocoglide", root=str(tmp_path), out=str(tmp_path / "oracle"),
                            method="oracle", progress=False)
    metrics = run_evaluation(settings, extractor=OracleExtractor(tiny_clip, regions))["metrics"]
    assert metrics["best_miou"] == pytest.approx(1.0) and metrics["pxap"] == pytest.approx(1.0)
    assert metrics["miou_curve"][0] == pytest.approx(240 / 1280)  # threshold 0 predicts every pixel

    _run(["masks", "--dataset", "cocoglide", "--root", str(tmp_path), "--method", "gae", "--closing", "5",
          "--out", str(tmp_path / "gae"), *TINY])
    results = json.loads((tmp_path / "gae" / "results.json").read_text())
    assert results["metrics"]["best_miou"] == pytest.approx(max(results["metrics"]["miou_curve"]), abs=1e-6)
    assert (tmp_path / "gae" / "table_masks.csv").is_file()


def test_wwbl_pipeline_with_tiny_blip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, out = _flickr(tmp_path / "flickr"), tmp_path / "run"
    blip = save_tiny_blip(tmp_path / "blip", favourite_word="dog")  # every region is captioned alike
    _run(["wwbl", "--dataset", "flickr30k", "--root", str(root), "--method", "gae", "--captioner", str(blip),
          "--out", str(out), *TINY])
    results = json.loads((out / "results.json").read_text())
    records = _records(out)
    assert len(records) == 2 and all(r["predictions"] for r in records)  # identical captions → one cluster
    hits = 0
    for record in records:
        for item_id, entry in record["items"].items():
            x1, y1, x2, y2 = _gt_union(*item_id.split("/"))
            row, col = record["predictions"][entry["match"]]["point"]
            hits += x1 <= col <= x2 and y1 <= row <= y2
    assert results["metrics"]["items"] == 3
    assert results["metrics"]["pointing"] == pytest.approx(hits / 3)

    # The caption chunk and the sharing of identical crops cannot change a caption: the run resumes
    # (nothing redone); options that change the output are refused in the same directory.
    args = ["wwbl", "--dataset", "flickr30k", "--root", str(root), "--method", "gae", "--captioner", str(blip),
            "--out", str(out), *TINY]
    lines = (out / "records.jsonl").read_text()
    _run(args + ["--caption-chunk", "3", "--caption-repeated-crops"])
    assert (out / "records.jsonl").read_text() == lines
    for changed in (["--proposal-dedup-iou", "0.7"], ["--max-proposals", "20"], ["--num-beams", "1"]):
        capsys.readouterr()
        assert main(args + changed) == 2
        assert "different settings" in capsys.readouterr().err


def test_resume_check_ignores_the_exact_caption_settings_of_an_older_run_json(tmp_path: Path) -> None:
    from wwbl.evaluation.evaluate import RecordCache
    from wwbl.inference.captioner import CaptionSettings
    from wwbl.inference.options import WWbLOptions
    from wwbl.inference.proposals import ProposalGenerator

    def settings(**pipeline) -> EvalSettings:
        return EvalSettings(task="wwbl", dataset="flickr30k", root="r", out=str(tmp_path), method="gae",
                            pipeline=WWbLOptions(**pipeline))

    identity = settings().identity()
    assert "chunk_size" not in identity["pipeline"]["caption"]
    assert "share_identical_crops" not in identity["pipeline"]["caption"]
    assert identity["pipeline"]["caption"]["num_beams"] == 3 and identity["pipeline"]["proposals"]["dedup_iou"] is None
    older = json.loads(json.dumps(identity))  # a run.json written when the chunk size was still recorded
    older["pipeline"]["caption"]["chunk_size"] = 120
    (tmp_path / "run.json").write_text(json.dumps(older))
    RecordCache(tmp_path, settings(caption=CaptionSettings(chunk_size=4, share_identical_crops=False)).identity())
    for changed in ({"caption": CaptionSettings(num_beams=1)}, {"proposals": ProposalGenerator(dedup_iou=0.5)},
                    {"proposals": ProposalGenerator(max_proposals=50)}):
        with pytest.raises(ValueError, match="different settings \\(pipeline\\)"):
            RecordCache(tmp_path, settings(**changed).identity())


def _zsg(root: Path) -> Path:
    rng = np.random.default_rng(2)
    flickr = root / "ds_csv_ann" / "flickr30k_c0" / "csv_dir"
    vg = root / "ds_csv_ann" / "vg_split" / "csv_dir"
    flickr.mkdir(parents=True)
    vg.mkdir(parents=True)
    (flickr / "test.csv").write_text('img_id,bbox,query\n11,"[2, 3, 30, 20]",a small boat\n11,"[0, 0, 40, 32]",the lake\n')
    (vg / "test_balanced_c2.csv").write_text('image_fpath,bbox,phrase\nVG_100K/21.jpg,"[5, 5, 25, 30]",a lamp\n')
    for path in (root / "flickr" / "flickr30k_images" / "11.jpg", root / "vg" / "VG_100K" / "21.jpg"):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(path)
    return root


def test_zero_shot_splits_two_extractors_acc_at_thr(tmp_path: Path) -> None:
    root = _zsg(tmp_path / "zsg")
    gts = {("zsg_flickr_s0", "row0"): [2, 3, 30, 20], ("zsg_flickr_s0", "row1"): [0, 0, 40, 32],
           ("zsg_vg_s0", "row0"): [5, 5, 25, 30]}
    runs = []
    for method, options in (("gae", []), ("adapting_clip", ["--option", "slic_levels=[8,16]"])):
        for dataset, threshold in (("zsg_flickr_s0", 0.5), ("zsg_vg_s0", 0.3)):
            out = tmp_path / f"{method}_{dataset}"
            _run(["wsg", "--dataset", dataset, "--root", str(root), "--method", method, "--out", str(out),
                  *options, *TINY])
            results = json.loads((out / "results.json").read_text())
            correct = [_iou(entry["boxes"][0], gts[(dataset, item)]) > threshold if entry["boxes"] else False
                       for record in _records(out) for item, entry in record["items"].items()]
            assert results["metrics"]["acc_iou_threshold"] == threshold
            assert results["metrics"]["acc_iou"] == pytest.approx(sum(correct) / len(correct))
            runs.append(str(out))
    _run(["tables", *runs, "--out", str(tmp_path / "merged")])
    rows = list(csv.reader((tmp_path / "merged" / "table_zsg.csv").open()))
    assert rows[0] == ["Method", "Acc Flickr S0", "Acc VG S0"]
    assert [r[0] for r in rows[1:]] == ["gae", "adapting_clip"]


def test_tables_layout_and_merge_rules() -> None:
    from wwbl.evaluation.tables import build_tables

    results = [
        {"task": "wsg", "dataset": "flickr30k", "method": "gae", "metrics": {"pointing": 0.7247, "bbox_acc": 0.2556}},
        {"task": "wsg", "dataset": "vg", "method": "gae", "metrics": {"pointing": 0.5472, "bbox_acc": float("nan")}},
        {"task": "wwbl", "dataset": "flickr30k", "method": "gae", "metrics": {"pointing": 0.5625, "bbox_acc": 0.1714}},
        {"task": "wsg", "dataset": "flickr30k", "method": "gae", "metrics": {"pointing": 0.75, "bbox_acc": 0.3}},
    ]
    tables = {t["key"]: t for t in build_tables(results)}
    wsg = tables["wsg"]
    # Paper order (VG before Flickr); the later flickr30k run replaces the earlier; NaN prints as "-".
    assert wsg["columns"] == ["Method", "Point Acc VG", "Point Acc Flickr", "Bbox Acc VG", "Bbox Acc Flickr"]
    assert wsg["rows"] == [["gae", "54.72", "75.00", "-", "30.00"]]
    assert [r[0] for r in tables["table7"]["rows"]] == ["WWbL: gae", "WSG: gae"]
    assert "zsg" not in tables and "masks" not in tables


# -- released-code evaluation options, on hand-made raw maps ----------------------------------------
class RawMapExtractor(HeatmapExtractor):
    """Returns a fixed raw (un-normalised) S×S map per phrase, through the base class's pipeline."""

    def __init__(self, clip, raw: dict[str, torch.Tensor], side: int):
        super().__init__(clip, input_size=side)
        self.raw = raw

    def _heatmaps_square(self, images, text_emb, image_index, phrases):
        return torch.stack([self.raw[p] for p in phrases])


def _one_item_unit(phrases, size_hw):
    from wwbl.readers.common import GroundingSample
    from wwbl.evaluation.tasks import Unit

    sample = GroundingSample("im", Path("im.png"), size_hw, list(phrases), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), "e")
    return Unit("im", sample.image_path, [sample])


def test_entity_average_normalised_or_raw(tiny_clip):
    from wwbl.evaluation.tasks import GroundingTask

    big, small = torch.zeros(4, 4), torch.zeros(4, 4)
    big[0, 0], big[3, 3] = 10.0, 6.0      # normalised: 1 at (0,0), 0.6 at (3,3)
    small[3, 3] = 1.0                      # already in [0, 1]
    extractor = RawMapExtractor(tiny_clip, {"big": big, "small": small}, side=4)
    unit, image = _one_item_unit(["big", "small"], (4, 4)), Image.new("RGB", (4, 4))
    points = {}
    for mode in ("normalised", "raw"):
        task = GroundingTask(extractor, lambda h: Detections.empty(), entity_average=mode)
        points[mode] = task.process([unit], [image])[0]["items"]["e"]["point"]
    # normalised mean: (0,0) 0.5, (3,3) 0.8; raw mean: (0,0) 5, (3,3) 3.5
    assert points == {"normalised": [3, 3], "raw": [0, 0]}


def test_box_resolution_original_or_model(tiny_clip):
    from wwbl.evaluation.tasks import GroundingTask
    from wwbl.box_rules import wsol_box

    native = torch.zeros(4, 4)
    native[1:3, 1:3] = 1.0
    extractor = RawMapExtractor(tiny_clip, {"block": native}, side=4)
    unit, image = _one_item_unit(["block"], (4, 8)), Image.new("RGB", (8, 4))
    boxes = {}
    for mode in ("original", "model"):
        task = GroundingTask(extractor, wsol_box, box_resolution=mode)
        boxes[mode] = task.process([unit], [image])[0]["items"]["e"]["boxes"]
    # model: the 4×4 map's box (1,1,3,3) scaled by (8/4, 4/4). original: widened to 8 columns
    # (bilinear, half-pixel centres) column x samples x/2 - 0.25, so columns 1..6 exceed 0.1.
    assert boxes == {"model": [[2.0, 1.0, 6.0, 3.0]], "original": [[1.0, 1.0, 7.0, 3.0]]}


def test_pointing_ties_centre_or_first_reach_the_grounding_points(tiny_clip):
    from wwbl.evaluation.__main__ import build_parser
    from wwbl.evaluation.evaluate import settings_from_args
    from wwbl.evaluation.tasks import GroundingTask

    plateau = torch.zeros(9, 9)
    plateau[2:7, 3:8] = 1.0  # a 5×5 flat top, centre (4, 5), first pixel (2, 3)
    extractor = RawMapExtractor(tiny_clip, {"flat": plateau}, side=9)
    unit, image = _one_item_unit(["flat"], (9, 9)), Image.new("RGB", (9, 9))
    points = {ties: GroundingTask(extractor, lambda h: Detections.empty(), pointing_ties=ties)
              .process([unit], [image])[0]["items"]["e"]["point"] for ties in ("centre", "first")}
    assert points == {"centre": [4, 5], "first": [2, 3]}
    base = ["wsg", "--dataset", "flickr30k", "--root", "r", "--out", "o", "--method", "gae"]
    assert settings_from_args(build_parser().parse_args(base)).pointing_ties == "centre"
    assert settings_from_args(build_parser().parse_args(base + ["--pointing-ties", "first"])).pointing_ties == "first"


def test_evaluation_cli_passes_the_released_code_options():
    from wwbl.evaluation.__main__ import build_parser
    from wwbl.evaluation.evaluate import settings_from_args

    args = build_parser().parse_args(["wsg", "--dataset", "flickr30k", "--root", "r", "--out", "o", "--method", "gae",
                                      "--entity-average", "raw", "--box-resolution", "model"])
    settings = settings_from_args(args)
    assert (settings.entity_average, settings.box_resolution) == ("raw", "model")
    args = build_parser().parse_args(["wsol", "--dataset", "cub", "--root", "r", "--out", "o", "--method", "gae",
                                      "--wsol-iou-area", "inclusive", "--box-mode", "reference"])
    assert settings_from_args(args).wsol_iou_area == "inclusive"
    defaults = settings_from_args(build_parser().parse_args(["wsg", "--dataset", "flickr30k", "--root", "r",
                                                             "--out", "o", "--method", "gae"]))
    assert (defaults.entity_average, defaults.box_resolution, defaults.wsol_iou_area) == \
        ("normalised", "original", "continuous")


def test_evaluation_score_flags_are_off_by_default_and_reach_the_settings():
    from wwbl.evaluation.__main__ import build_parser
    from wwbl.evaluation.evaluate import settings_from_args
    from wwbl.inference.scoring import Scoring

    base = ["--dataset", "flickr30k", "--root", "r", "--out", "o", "--method", "gae"]
    defaults = settings_from_args(build_parser().parse_args(["wsg", *base]))
    assert defaults.scoring is None and "score_threshold" not in defaults.identity()  # old run.json still resume
    wsg = settings_from_args(build_parser().parse_args(["wsg", *base, "--score-threshold", "0.3"]))
    assert wsg.scoring == Scoring(threshold=0.3) and wsg.identity()["score_threshold"] == 0.3
    wwbl = settings_from_args(build_parser().parse_args(["wwbl", *base, "--top-k", "2"]))
    assert wwbl.scoring == Scoring(top_k=2)
    named = settings_from_args(build_parser().parse_args(["wwbl", *base, "--cross-phrase-iou", "0.5", "--score-view",
                                                          "crop"]))
    assert named.scoring == Scoring(view="crop", cross_phrase_iou=0.5) and named.identity()["score_view"] == "crop"
    assert "score_view" not in defaults.identity()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["wsol", "--dataset", "cub", "--root", "r", "--out", "o", "--method", "gae",
                                   "--top-k", "2"])


def test_working_resolution_is_a_wwbl_flag_and_recorded_only_off_its_default(tmp_path: Path) -> None:
    from wwbl.defaults import MAX_SIDE
    from wwbl.evaluation.__main__ import build_parser
    from wwbl.evaluation.evaluate import settings_from_args

    base = ["wwbl", "--dataset", "flickr30k", "--root", "r", "--out", str(tmp_path), "--method", "gae"]
    parser = build_parser()
    default = settings_from_args(parser.parse_args(base))
    smaller = settings_from_args(parser.parse_args(base + ["--max-side", "800"]))
    assert default.max_side == MAX_SIDE and smaller.max_side == 800
    assert "max_side" not in default.identity()  # a run.json from before the knob still resumes
    assert smaller.identity()["max_side"] == 800  # a different working resolution is a different run
