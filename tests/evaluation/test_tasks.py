"""Evaluation tasks: each distinct phrase of an image is computed once."""
from __future__ import annotations

import pytest
import torch

from wwbl.evaluation.tasks import _heatmaps_once_per_phrase


def test_grounding_task_computes_each_distinct_phrase_of_an_image_once():
    class CountingExtractor:
        def __init__(self):
            self.requests = []

        def heatmaps(self, images, phrases):
            self.requests.append([list(p) for p in phrases])
            # map value = length of the phrase, so each returned map can be traced to its phrase
            return [torch.tensor([float(len(p)) for p in plist]).view(-1, 1, 1).expand(-1, 2, 3) for plist in phrases]

    extractor = CountingExtractor()
    out = _heatmaps_once_per_phrase(extractor, ["img0", "img1", "img2"], [["man", "a dog", "man"], ["sky", "sky"], []])
    assert extractor.requests == [[["man", "a dog"], ["sky"], []]]
    assert [m[:, 0, 0].tolist() for m in out] == [[3.0, 5.0, 3.0], [3.0, 3.0], []]
    assert out[2].shape == (0, 2, 3)


def _unit(phrases_per_item: list[str]):
    from pathlib import Path

    from wwbl.evaluation.tasks import Unit
    from wwbl.readers.common import GroundingSample

    samples = [GroundingSample("im", Path("im.png"), (8, 8), [p], torch.tensor([[0.0, 2.0, 4.0, 6.0]]), f"e{k}")
               for k, p in enumerate(phrases_per_item)]
    return Unit("im", Path("im.png"), samples)


def test_wsg_scoring_is_off_by_default_and_drops_an_absent_phrase_when_on():
    from tests.helpers.scoring import FixedRawMaps, block, red_left_blue_right
    from wwbl.box_rules import BoxRule
    from wwbl.evaluation.tasks import GroundingTask
    from wwbl.inference.pipeline import as_pil
    from wwbl.inference.scoring import Scoring

    extractor = FixedRawMaps({"a red one": block(0.9), "a green one": block(0.01)})
    image = as_pil(red_left_blue_right())
    unit = _unit(["a red one", "a green one"])
    off = GroundingTask(extractor, BoxRule().detect).process([unit], [image])[0]["items"]
    # off: the rule's boxes and scores, the same for both items (identical normalised maps)
    assert off["e0"] == off["e1"] and off["e0"]["scores"] == [1.0] and off["e0"]["boxes"] == [[0.0, 2.0, 4.0, 6.0]]
    on = GroundingTask(extractor, BoxRule().detect, scoring=Scoring(threshold=0.5)).process([unit], [image])[0]["items"]
    assert on["e0"]["boxes"] == off["e0"]["boxes"] and on["e0"]["scores"] == [pytest.approx(0.9 ** 0.5, abs=1e-3)]
    assert on["e1"]["boxes"] == [] and on["e0"]["point"] == off["e0"]["point"]
    with pytest.raises(ValueError, match="entity_average"):
        GroundingTask(extractor, BoxRule().detect, entity_average="raw", scoring=Scoring())
