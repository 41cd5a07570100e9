"""The ROC AUC of shapes_world.score_auc against hand-counted pairs."""
import pytest

from shapes_world.score_auc import roc_auc, summarise


def test_auc_counts_the_pairs_a_positive_wins():
    # positives 0.35, 0.8; negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both → 3 of 4 pairs
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)


def test_auc_counts_ties_as_halves():
    # positives 0.5, 0.9; negatives 0.2, 0.5: 1 + 0.5 (tie) + 1 + 1 = 3.5 of 4 pairs
    assert roc_auc([0.2, 0.5, 0.5, 0.9], [False, True, False, True]) == pytest.approx(0.875)
    assert roc_auc([0.3, 0.3, 0.3], [True, False, False]) == pytest.approx(0.5)
    assert roc_auc([0.9, 0.1], [False, True]) == 0.0


def test_auc_needs_both_classes():
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [True, True])


def test_summary_counts_boxes_and_phrases_per_threshold():
    rows = {"rule": [0.8, 0.8, 0.8], "confidence": [0.5, 0.2, 0.32], "heat": [0.9, 0.1, 0.5], "clip": [0.3, 0.1, 0.2],
            "correct": [True, False, False], "present": [True, True, False], "phrase": [0, 0, 1]}
    result = summarise(rows, images=1, phrases=2, absent_phrases=1)
    assert result["auc"] == {"rule": 0.5, "confidence": 1.0, "heat": 1.0, "clip": 1.0}
    at_03 = next(t for t in result["thresholds"] if t["threshold"] == 0.3)
    assert at_03 == {"threshold": 0.3, "correct_boxes_kept": 1.0, "wrong_boxes_dropped": 0.5,
                     "absent_phrases_with_a_box": 1, "present_phrases_with_a_correct_box": 1}
    at_035 = next(t for t in result["thresholds"] if t["threshold"] == 0.35)
    assert at_035["absent_phrases_with_a_box"] == 0 and at_035["wrong_boxes_dropped"] == 1.0
