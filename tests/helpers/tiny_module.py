"""A tiny WWbLModule (random tiny CLIP, VGG16 at 1/16 width) for the module and migration tests."""
import torch

from wwbl.lit_module import WWbLModule


def tiny_module(**kw):
    torch.manual_seed(0)
    kw.setdefault("network", {"architecture": "grounding_net", "vgg_width_div": 16})
    return WWbLModule(clip_model="wwbl-tiny-vit", clip_pretrained="random", pretrained_backbone=False,
                      input_size=64, **kw)
