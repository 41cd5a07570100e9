"""The Markdown of the report: the ablation table and the teacher of a partial report."""
from __future__ import annotations

from shapes_world.history import val_history_ties
from shapes_world.report_ablation import mean_std
from shapes_world.report_markdown import render_ablation, render_wsg, teacher_of


def test_ablation_table_shows_mean_and_std_in_percent():
    row = {"description": "L_rmap only", "overrides": ["--model.lambda_fore", "0"],
           "test": {"pointing": mean_std([0.5, 0.7]), "bbox_acc": mean_std([0.1, 0.1])},
           "openworld": {"pointing": mean_std([0.4, 0.4]), "bbox_acc": mean_std([0.2, 0.3])}}
    text = "\n".join(render_ablation({"ablation": {"rows": {"rmap_only": row}, "seeds": [0, 1], "steps": 10},
                                      "settings": {"g_config": "g.yaml"}}))
    # pointing: mean 60 %, std sqrt(2 · 0.1²) = 14.1 points
    assert "| 60.0 ± 14.1 | 10.0 ± 0.0 | 40.0 ± 0.0 | 25.0 ± 7.1 |" in text


def test_teacher_label_survives_a_report_without_wsg_rows():
    assert teacher_of({"wsg": {"teacher": "gae_all_blocks"}}) == "gae_all_blocks"
    assert teacher_of({"wwbl": {"rows": {}}}) == "gae"  # `--skip wsg`: the WWbL section still renders


def test_wsg_section_shows_pointing_under_both_tie_rules():
    rows = {"g": {"test": {"pointing": 0.70, "bbox_acc": 0.3}, "openworld": {"pointing": 0.65, "bbox_acc": 0.3}}}
    first = {"g": {"test": {"pointing": 0.58}, "openworld": {"pointing": 0.61}}}
    wsg = {"rows": rows, "centre_sigma": 0.2, "centre_sigma_val_box_acc": {"0.20": 0.1}, "not_applicable": {},
           "released_ties": first}
    text = "\n".join(render_wsg({"wsg": wsg, "settings": {"seed": 0}}))
    assert "| 70.0 / 58.0 | 65.0 / 61.0 |" in text  # default (centre) / released (first), per split


def test_val_history_tie_rule_of_a_training_record():
    assert val_history_ties(None) == "centre"  # no record: the evaluation's default
    assert val_history_ties({"val_history": []}) == "first"  # recorded before the knob existed
    assert val_history_ties({"val_pointing_ties": "centre"}) == "centre"
