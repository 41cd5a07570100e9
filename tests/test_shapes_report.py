"""The shapes report's own arithmetic: claims, seed aggregation, the teacher choice, g's history
and the Markdown that quotes them (hand-made report JSON; no models)."""
from __future__ import annotations

import csv
import math

import pytest

from shapes_world.history import plot_history, read_val_history
from shapes_world.report_ablation import mean_std
from shapes_world.report_claims import claims
from shapes_world.report_markdown import render_ablation, render_claims, teacher_of
from shapes_world.report_runs import teacher_label


def _row(pointing: float, box: float) -> dict[str, float]:
    return {"pointing": pointing, "bbox_acc": box}


def _report() -> dict:
    return {
        "wsg": {"teacher": "gae_all_blocks",
                "rows": {"g": {"test": _row(0.80, 0.50), "openworld": _row(0.70, 0.30)},
                         "gae_all_blocks": {"test": _row(0.75, 0.35), "openworld": _row(0.72, 0.25)},
                         "gae": {"test": _row(0.10, 0.01), "openworld": _row(0.10, 0.01)}}},
        "wwbl": {"rows": {"g": {"test": _row(0.70, 0.40), "openworld": _row(0.50, 0.20)},
                          "gae": {"test": _row(0.60, 0.30), "openworld": _row(0.55, 0.10)}}},
    }


def test_claims_margins_and_verdicts_hand_computed():
    found = {(c["claim"], c["split"]): c for c in claims(_report())}
    box = found[("g box accuracy − teacher box accuracy ≥ 10 points", "test")]
    assert box["margin_points"] == pytest.approx(15.0) and box["holds"]  # 50 − 35, against the all-block teacher
    box_ow = found[("g box accuracy − teacher box accuracy ≥ 10 points", "openworld")]
    assert box_ow["margin_points"] == pytest.approx(5.0) and not box_ow["holds"]
    assert not found[("g pointing ≥ teacher pointing", "openworld")]["holds"]  # 70 < 72
    assert found[("Algorithm 1 with g ≥ with GAE, pointing", "test")]["holds"]
    assert not found[("Algorithm 1 with g ≥ with GAE, pointing", "openworld")]["holds"]  # 50 < 55
    gap = found[("WWbL pointing within 15 points of WSG pointing (g)", "openworld")]
    assert gap["margin_points"] == pytest.approx(-5.0) and not gap["holds"]  # 70 − 50 = 20 > 15
    assert found[("WWbL pointing within 15 points of WSG pointing (g)", "test")]["holds"]  # 80 − 70 = 10


def test_missing_rows_make_a_claim_fail_not_crash():
    report = _report()
    del report["wwbl"]
    found = [c for c in claims(report) if c["claim"].startswith("Algorithm 1")]
    assert found and all(c["margin_points"] is None and not c["holds"] for c in found)
    report["claims"] = claims(report)
    assert "**no**" in "\n".join(render_claims(report))


def test_mean_std_is_the_sample_standard_deviation():
    result = mean_std([0.1, 0.2, 0.6])
    mean = 0.3
    std = math.sqrt(((0.1 - mean) ** 2 + (0.2 - mean) ** 2 + (0.6 - mean) ** 2) / 2)
    assert result["mean"] == pytest.approx(mean) and result["std"] == pytest.approx(std) and result["n"] == 3
    assert mean_std([0.4]) == {"mean": pytest.approx(0.4), "std": 0.0, "n": 1}


def test_teacher_follows_the_g_config(tmp_path):
    for start, label in ((-1, "gae"), (0, "gae_all_blocks"), (2, "gae_from_block2")):
        config = tmp_path / f"g{start}.yaml"
        config.write_text(f"model:\n  relevancy_start_layer: {start}\n")
        assert teacher_label(str(config)) == label


def test_ablation_table_shows_mean_and_std_in_percent():
    row = {"description": "L_rmap only", "overrides": ["--model.lambda_fore", "0"],
           "test": {"pointing": mean_std([0.5, 0.7]), "bbox_acc": mean_std([0.1, 0.1])},
           "openworld": {"pointing": mean_std([0.4, 0.4]), "bbox_acc": mean_std([0.2, 0.3])}}
    text = "\n".join(render_ablation({"ablation": {"rows": {"rmap_only": row}, "seeds": [0, 1], "steps": 10},
                                      "settings": {"g_config": "g.yaml"}}))
    # pointing: mean 60 %, std sqrt(2 · 0.1²) = 14.1 points
    assert "| 60.0 ± 14.1 | 10.0 ± 0.0 | 40.0 ± 0.0 | 25.0 ± 7.1 |" in text


def test_val_history_reads_lightning_csv_and_plots(tmp_path):
    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss", "val/box_acc", "val/pointing_acc"])
        writer.writerow([0, 19, 1.5, "", ""])  # a training-loss row: no validation
        writer.writerow([0, 124, "", 0.25, 0.5])
        writer.writerow([1, 249, "", 0.375, 0.625])
    history = read_val_history(path)
    assert history == [{"epoch": 0, "step": 124, "pointing": 0.5, "bbox_acc": 0.25},
                       {"epoch": 1, "step": 249, "pointing": 0.625, "bbox_acc": 0.375}]
    png = tmp_path / "curve.png"
    plot_history(history, png, chosen_epoch=1, teacher={"pointing": 0.6, "bbox_acc": 0.3})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="CSV log"):
        read_val_history(tmp_path / "absent.csv")


def test_teacher_label_survives_a_report_without_wsg_rows():
    assert teacher_of({"wsg": {"teacher": "gae_all_blocks"}}) == "gae_all_blocks"
    assert teacher_of({"wwbl": {"rows": {}}}) == "gae"  # `--skip wsg`: the WWbL section still renders
