"""`ClipSpec`: the one constructor of the frozen CLIP from settings."""
import dataclasses

import pytest
import torch

from wwbl.clip import ClipSpec, FrozenCLIP


def test_defaults_are_frozen_clips_defaults():
    assert ClipSpec() == ClipSpec("ViT-B-32", None, None, "fp32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ClipSpec().model = "RN50"


def test_dict_round_trip_and_an_exports_clip_section():
    spec = ClipSpec("wwbl-tiny-vit", "random", None, "bf16")
    assert spec.to_dict() == {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None, "precision": "bf16"}
    assert ClipSpec.from_dict(spec.to_dict()) == spec
    # an export's section has no precision (and may carry notes): defaults fill in, notes are ignored
    section = {"model": "ViT-B-32", "pretrained": "openai", "checkpoint": None, "note": "reference"}
    assert ClipSpec.from_dict(section) == ClipSpec("ViT-B-32", "openai", None, "fp32")


def test_build_gives_the_named_clip_on_the_device():
    torch.manual_seed(0)
    clip = ClipSpec("wwbl-tiny-vit", "random", precision="bf16").build(device="cpu")
    assert isinstance(clip, FrozenCLIP)
    assert clip.spec == ClipSpec("wwbl-tiny-vit", "random", precision="bf16").to_dict()
    assert clip.dtype == torch.bfloat16 and clip.device == torch.device("cpu")
    torch.manual_seed(0)
    direct = FrozenCLIP("wwbl-tiny-vit", pretrained="random", precision="bf16")
    assert all(torch.equal(a, b) for a, b in zip(clip.model.state_dict().values(), direct.model.state_dict().values()))
    with pytest.raises(ValueError, match="needs weights"):
        ClipSpec("wwbl-tiny-vit").build()  # no tag, no checkpoint: FrozenCLIP's rule holds
