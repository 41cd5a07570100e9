"""Work shared across phrases (performance fixes) gives the same results as the repeated computation."""
from __future__ import annotations

import pytest
import torch

from wwbl.clip import FrozenCLIP


@pytest.fixture(scope="module")
def clip() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("wwbl-tiny-vit", pretrained="random")


def test_network_g_encodes_each_image_once_and_matches_repeated_forward(clip):
    from wwbl.extractors.network_g import NetworkGExtractor
    from wwbl.networks import GroundingNet

    torch.manual_seed(1)
    net = GroundingNet(text_dim=clip.embed_dim, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False).eval()
    extractor = NetworkGExtractor(clip, net, input_size=48)
    encoded_batches = []
    hook = net.encoder.register_forward_hook(lambda module, inputs, output: encoded_batches.append(inputs[0].shape[0]))
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    phrases = [["a dog", "a cat", "the sky"], ["a tree"]]
    got = extractor.heatmaps(list(images), phrases)
    hook.remove()
    assert encoded_batches == [2]  # two images, four phrases: one encoder pass over the two images
    index = torch.tensor([0, 0, 0, 1])
    with torch.no_grad():
        raw = net(images[index], clip.encode_text([p for plist in phrases for p in plist]))
    low, high = raw.flatten(1).min(1).values, raw.flatten(1).max(1).values
    want = (raw - low[:, None, None]) / (high - low)[:, None, None]
    assert torch.allclose(torch.cat(got), want, atol=1e-5)


@pytest.mark.parametrize("start_layer", [-1, 1])
def test_relevancy_with_image_index_equals_relevancy_of_repeated_images(clip, start_layer):
    from wwbl.clip.relevancy import relevancy_maps

    prepared = clip.prepare(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    text = clip.encode_text(["a dog", "a cat", "a red ball"])
    index = torch.tensor([1, 0, 1])
    got = relevancy_maps(clip.vit, prepared, text, clip.logit_scale, start_layer, image_index=index)
    want = relevancy_maps(clip.vit, prepared[index], text, clip.logit_scale, start_layer)
    assert got.shape == (3, clip.image_size, clip.image_size) and not got.requires_grad
    assert torch.allclose(got, want, atol=1e-6)


def test_grounding_task_computes_each_distinct_phrase_of_an_image_once():
    from wwbl.evaluation.tasks import _heatmaps_once_per_phrase

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
