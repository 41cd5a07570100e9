"""The report's claims: margins and verdicts by hand, missing rows fail instead of crashing."""
from __future__ import annotations

import pytest

from shapes_world.report_claims import claims
from shapes_world.report_markdown import render_claims


def _row(pointing: float, box: float) -> dict[str, float]:
    return {"pointing": pointing, "bbox_acc": box}


def _report() -> dict:
    return {
        "wsg": {"teacher": "gae_all_blocks",
                "rows": {"g": {"test": _row(0.80, 0.50), "openworld": _row(0.70, 0.30)},
                         "gae_all_blocks": {"test": _row(0.75, 0.35), "openworld": _row(0.72, 0.25)},
                         "gae": {"test": _row(0.10, 0.01), "openworld": _row(0.10, 0.01)}},
                "released_ties": {"g": {"test": _row(0.60, 0.50), "openworld": _row(0.75, 0.30)},
                                  "gae_all_blocks": {"test": _row(0.74, 0.35), "openworld": _row(0.72, 0.25)}}},
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
    first = "g pointing ≥ teacher pointing, released tie rule (first maximum)"
    assert found[(first, "test")]["margin_points"] == pytest.approx(-14.0) and not found[(first, "test")]["holds"]
    assert found[(first, "openworld")]["margin_points"] == pytest.approx(3.0) and found[(first, "openworld")]["holds"]


def test_missing_rows_make_a_claim_fail_not_crash():
    report = _report()
    del report["wwbl"]
    found = [c for c in claims(report) if c["claim"].startswith("Algorithm 1")]
    assert found and all(c["margin_points"] is None and not c["holds"] for c in found)
    report["claims"] = claims(report)
    assert "**no**" in "\n".join(render_claims(report))
