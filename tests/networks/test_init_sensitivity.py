"""Guards against an image-blind network g (the shipped shapes g once drew the same map for every
scene: its from-scratch VGG16 had PyTorch's default conv init, which loses the image over ten
convolutions).

Each test measures how much g's map moves when the image (or the phrase) changes, at init and
after a few supervised steps on generated scenes. Thresholds sit between the figures measured
with torchvision's VGG init (the fix) and with PyTorch's default init (the bug), seed 0:

======================================  ==========  ============  =========
measure                                 fixed init  default init  threshold
======================================  ==========  ============  =========
g, init: across-image spread            5.4e-2      1.7e-4        3e-3
g, init: across-phrase spread           7.2e-2      4.3e-2        1e-2
g, 60 steps: across-image spread        6.7e-2      9.8e-5        2.5e-3
U-Net, init: across-image spread        5.8e-2      5.2e-3        1.7e-2
U-Net, 60 steps: across-image spread    6.7e-2      6.3e-2        2e-2
======================================  ==========  ============  =========

The phrase gate acts after the encoder, so a default-init g still responds to the phrase; the
U-Net's shallow skips carry the image past a collapsed deep encoder once trained. Those two
rows guard total blindness only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wwbl.networks import GroundingNet, WSOLUNet

SIZE, DIV, TEXT_DIM = 64, 16, 16


def square_scenes(count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dim noise with one bright square each, and the square's mask."""
    images = torch.rand(count, 3, SIZE, SIZE, generator=gen) * 0.5
    masks = torch.zeros(count, SIZE, SIZE)
    for i in range(count):
        side = int(torch.randint(SIZE // 6, SIZE // 3, (1,), generator=gen))
        y0, x0 = torch.randint(0, SIZE - side, (2,), generator=gen).tolist()
        images[i, :, y0:y0 + side, x0:x0 + side] = 1.0
        masks[i, y0:y0 + side, x0:x0 + side] = 1.0
    return images, masks


def image_spread(maps: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across images: 0 for an image-blind network."""
    return float(maps.std(dim=0).mean())


def train_on_squares(net: nn.Module, text: torch.Tensor | None, steps: int, gen: torch.Generator) -> None:
    """A few Adam steps of BCE against the square masks (a target that depends on the image)."""
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        images, masks = square_scenes(8, gen)
        pred = net(images) if text is None else net(images, text)
        loss = F.binary_cross_entropy(pred, masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()


def _grounding_net() -> GroundingNet:
    torch.manual_seed(0)
    return GroundingNet(text_dim=TEXT_DIM, vgg_width_div=DIV, pretrained_backbone=False)


def test_vgg_encoder_convs_have_torchvision_init() -> None:
    """Kaiming normal with fan_out: weight std = sqrt(2 / (out_channels · 9)), zero bias."""
    net = GroundingNet(text_dim=TEXT_DIM, vgg_width_div=1, pretrained_backbone=False)
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10
    for conv in convs[1:]:  # the first has only 64·3·9 weights: its std estimate is noisier
        expected = (2.0 / (conv.out_channels * 9)) ** 0.5
        assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.05
        assert float(conv.bias.abs().max()) == 0.0


def test_g_at_init_depends_on_image_and_phrase() -> None:
    net = _grounding_net().train()  # batch statistics: the BN running stats are not learned yet
    gen = torch.Generator().manual_seed(0)
    images, _ = square_scenes(8, gen)
    texts = torch.randn(8, TEXT_DIM, generator=gen)
    with torch.no_grad():
        across_images = image_spread(net(images, texts[:1].expand(8, -1)))
        across_phrases = image_spread(net(images[:1].expand(8, -1, -1, -1), texts))
    assert across_images > 3e-3, f"g's map barely changes with the image at init: {across_images:.2e}"
    assert across_phrases > 1e-2, f"g's map barely changes with the phrase at init: {across_phrases:.2e}"


def test_g_after_training_steps_depends_on_image() -> None:
    net = _grounding_net()
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(1, TEXT_DIM, generator=gen).expand(8, -1)
    train_on_squares(net, text, steps=60, gen=gen)
    images, _ = square_scenes(8, gen)
    with torch.no_grad():
        spread = image_spread(net(images, text))
    assert spread > 2.5e-3, f"trained g's map barely changes with the image: {spread:.2e}"


def test_wsol_unet_depends_on_image_at_init_and_after_training() -> None:
    torch.manual_seed(0)
    net = WSOLUNet("vgg16", pretrained_backbone=False, vgg_width_div=DIV).train()
    gen = torch.Generator().manual_seed(0)
    images, _ = square_scenes(8, gen)
    with torch.no_grad():
        at_init = image_spread(net(images))
    assert at_init > 1.7e-2, f"the U-Net's map barely changes with the image at init: {at_init:.2e}"
    train_on_squares(net, None, steps=60, gen=gen)
    images, _ = square_scenes(8, gen)
    with torch.no_grad():
        trained = image_spread(net(images))
    assert trained > 2e-2, f"the trained U-Net's map barely changes with the image: {trained:.2e}"
