"""The paper's claims the shapes world can test, read off the report's rows as margins with a verdict."""
from __future__ import annotations

from typing import Any

from shapes_world.report_markdown import nested_get
from shapes_world.report_settings import SPLITS


def claims(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims this world can test, each with its measured margin and a pass/fail."""
    out: list[dict[str, Any]] = []
    rows = nested_get(report, "wsg", "rows") or {}
    teacher = nested_get(report, "wsg", "teacher")
    wwbl = nested_get(report, "wwbl", "rows") or {}
    first = nested_get(report, "wsg", "released_ties") or {}

    def add(claim: str, split: str, value: float | None, needed: float) -> None:
        out.append({"claim": claim, "split": split, "margin_points": None if value is None else 100 * value,
                    "needed_points": 100 * needed, "holds": value is not None and value >= needed})

    for split in SPLITS:
        g, t = nested_get(rows, "g", split) or {}, nested_get(rows, teacher, split) or {}
        wg, wt = nested_get(wwbl, "g", split) or {}, nested_get(wwbl, "gae", split) or {}
        add("g box accuracy − teacher box accuracy ≥ 10 points", split, _diff(g, t, "bbox_acc"), 0.10)
        add("g pointing ≥ teacher pointing", split, _diff(g, t, "pointing"), 0.0)
        add("g pointing ≥ teacher pointing, released tie rule (first maximum)", split,
            _diff(nested_get(first, "g", split) or {}, nested_get(first, teacher, split) or {}, "pointing"), 0.0)
        add("Algorithm 1 with g ≥ with GAE, pointing", split, _diff(wg, wt, "pointing"), 0.0)
        add("Algorithm 1 with g ≥ with GAE, box accuracy", split, _diff(wg, wt, "bbox_acc"), 0.0)
        gap = _diff(g, wg, "pointing")
        add("WWbL pointing within 15 points of WSG pointing (g)", split, None if gap is None else 0.15 - gap, 0.0)
    return out


def _diff(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if key not in a or key not in b:
        return None
    return float(a[key]) - float(b[key])
