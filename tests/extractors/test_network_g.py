"""Network g as an extractor: from an export, against g's direct forward; one encoder pass per image."""
from __future__ import annotations

import pytest
import torch

from wwbl.export import export_grounding_net
from wwbl.extractors import build_extractor
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.networks import GroundingNet


def _tiny_g(text_dim: int = 32):
    torch.manual_seed(8)
    return GroundingNet(text_dim=text_dim, vgg_width_div=16, pretrained_backbone=False).eval()


def test_network_g_from_export_matches_direct_forward(tiny_clip, tmp_path):
    net = _tiny_g()
    spec = {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None}
    export_grounding_net(net, str(tmp_path), spec, extra={"input_size": 48, "text_prefix": "image of "})
    extractor = NetworkGExtractor.from_export(tmp_path, clip=tiny_clip)
    assert extractor.input_size == 48 and extractor.text_prefix == "image of "
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(9))  # already at g's size
    got = extractor.heatmaps([image], [["a dog", "a cat"]])[0]
    with torch.no_grad():
        raw = net(image.expand(2, 3, 48, 48), tiny_clip.encode_text(["image of a dog", "image of a cat"]))
    low, high = raw.flatten(1).min(1).values, raw.flatten(1).max(1).values
    want = (raw - low[:, None, None]) / (high - low)[:, None, None]
    assert torch.allclose(got, want, atol=1e-5)
    # the registry name and a CLIP rebuilt from the export's spec work too
    assert build_extractor("g", tiny_clip, network=str(tmp_path)).input_size == 48
    rebuilt = NetworkGExtractor.from_export(tmp_path)
    assert rebuilt.heatmaps([torch.rand(3, 30, 50)], [["a dog"]])[0].shape == (1, 30, 50)


def test_network_g_rejects_mismatched_text_size_and_missing_input_size(tiny_clip):
    with pytest.raises(ValueError, match="32-d"):
        NetworkGExtractor(tiny_clip, _tiny_g(text_dim=16), input_size=48)
    with pytest.raises(ValueError, match="input_size"):
        NetworkGExtractor(tiny_clip, _tiny_g())


def test_network_g_encodes_each_image_once_and_matches_repeated_forward(tiny_clip):
    torch.manual_seed(1)
    net = GroundingNet(text_dim=tiny_clip.embed_dim, decoder_channels=8, vgg_width_div=16,
                       pretrained_backbone=False).eval()
    extractor = NetworkGExtractor(tiny_clip, net, input_size=48)
    encoded_batches = []
    hook = net.encoder.register_forward_hook(lambda module, inputs, output: encoded_batches.append(inputs[0].shape[0]))
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    phrases = [["a dog", "a cat", "the sky"], ["a tree"]]
    got = extractor.heatmaps(list(images), phrases)
    hook.remove()
    assert encoded_batches == [2]  # two images, four phrases: one encoder pass over the two images
    index = torch.tensor([0, 0, 0, 1])
    with torch.no_grad():
        raw = net(images[index], tiny_clip.encode_text([p for plist in phrases for p in plist]))
    low, high = raw.flatten(1).min(1).values, raw.flatten(1).max(1).values
    want = (raw - low[:, None, None]) / (high - low)[:, None, None]
    assert torch.allclose(torch.cat(got), want, atol=1e-5)
