"""The WWbL speed-options measurement: its configurations parse to the intended options, and the table's
derived numbers (per image, speed-up, same output) follow from hand-made rows."""
import pytest

from shapes_world.wwbl_options import CONFIGS, markdown_table, pipeline_options, table_rows
from wwbl.inference.options import WWbLOptions


def test_the_configurations_name_the_intended_options():
    options = {label: pipeline_options(flags) for label, flags in CONFIGS}
    assert options["default"] == WWbLOptions()
    assert options["every crop captioned (reference cost)"].caption.share_identical_crops is False
    assert options["dedup IoU 0.7"].proposals.dedup_iou == 0.7 and options["dedup IoU 0.5"].proposals.dedup_iou == 0.5
    assert options["2 beams"].caption.num_beams == 2 and options["1 beam (greedy)"].caption.num_beams == 1
    assert options["at most 50 proposals"].proposals.max_proposals == 50
    assert options["at most 20 proposals"].proposals.max_proposals == 20
    assert CONFIGS[0] == ("default", ())  # the speed-ups' baseline comes first


def rows():
    same = {"1": [{"caption": "a red circle"}]}
    return {"default": {"flags": [], "pointing": 0.5, "bbox_acc": 0.25, "images": 4, "proposals": 400,
                        "captioned": 360, "seconds": 8.0, "predictions": same},
            "fast": {"flags": ["--max-proposals", "20"], "pointing": 0.75, "bbox_acc": 0.0, "images": 4,
                     "proposals": 80, "captioned": 78, "seconds": 2.0, "predictions": {"1": []}}}


def test_table_rows_by_hand():
    base, fast = table_rows(rows())
    assert (base["seconds"], base["speedup"], base["same"]) == (2.0, 1.0, True)
    assert (base["proposals"], base["captioned"]) == (100.0, 90.0)
    assert fast["seconds"] == 0.5 and fast["speedup"] == pytest.approx(4.0) and fast["same"] is False
    assert (fast["proposals"], fast["captioned"], fast["flags"]) == (20.0, 19.5, "--max-proposals 20")


def test_markdown_table_by_hand():
    lines = markdown_table(rows()).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| configuration |")
    assert lines[2] == "| default | – | 50.0 % | 25.0 % | 100.0 | 90.0 | 2.000 | ×1.00 | yes |"
    assert lines[3] == "| fast | `--max-proposals 20` | 75.0 % | 0.0 % | 20.0 | 19.5 | 0.500 | ×4.00 | no |"
