"""WSOLUNet (WSOL's network) on tiny random instances and every backbone."""
import pytest
import torch

from wwbl.networks import WSOLUNet
from wwbl.networks.backbones import TIMM_BACKBONES


@pytest.mark.parametrize("backbone,kw", [("vgg16", {"vgg_width_div": 16}), ("resnet18", {}), ("mobilenet_v2", {})])
def test_wsol_unet_shapes(backbone, kw):
    torch.manual_seed(0)
    net = WSOLUNet(backbone, pretrained_backbone=False, **kw).eval()
    out = net(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 64, 48)
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["densenet161", "inception_v3", "resnet50", "resnet101"])
def test_wsol_unet_other_backbones(backbone):
    net = WSOLUNet(backbone, pretrained_backbone=False).eval()
    assert net(torch.rand(1, 3, 96, 96)).shape == (1, 96, 96)


def test_wsol_unet_uses_its_skip_connections():
    torch.manual_seed(0)
    net = WSOLUNet("vgg16", pretrained_backbone=False, vgg_width_div=16).eval()
    x = torch.rand(1, 3, 32, 32)
    base = net(x)
    # Zeroing the full-resolution skip (relu1_2) must change the output.
    net.decoder[-1].register_forward_pre_hook(lambda m, args: (args[0], torch.zeros_like(args[1])))
    assert not torch.allclose(base, net(x))


@pytest.mark.parametrize("backbone", sorted(TIMM_BACKBONES))
def test_wsol_unet_timm_backbone_maps_at_a_non_multiple_of_32_input(backbone):
    torch.manual_seed(0)
    net = WSOLUNet(backbone, pretrained_backbone=False, max_decoder_channels=32).eval()
    out = net(torch.rand(2, 3, 50, 70))
    assert out.shape == (2, 50, 70)
    assert ((out > 0) & (out < 1)).all()


def test_wsol_unet_decoder_concatenates_every_timm_tap():
    net = WSOLUNet("mobilenet_v1", pretrained_backbone=False, max_decoder_channels=32)
    skips = [64, 128, 256, 512]  # the taps below the deepest, in decoder order: reversed
    assert [block.convs[0].in_channels for block in net.decoder] == [32 + c for c in reversed(skips)]
