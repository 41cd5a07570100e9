"""Evaluation tasks: each distinct phrase of an image is computed once."""
from __future__ import annotations

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
