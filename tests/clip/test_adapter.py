"""The frozen CLIP adapter (`FrozenCLIP`) on tiny random open_clip models."""
import json
import tempfile

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from wwbl.clip import FrozenCLIP, UnsupportedCLIPError
from wwbl.clip.adapter import MODEL_CONFIG_DIR
from wwbl.errors import MissingResourceError


def test_encode_image_is_differentiable_but_clip_is_frozen(tiny_clip):
    images = torch.rand(2, 3, 30, 30, requires_grad=True)
    emb = tiny_clip.encode_image(images)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    emb.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.model.parameters())
    tiny_clip.train()
    assert not tiny_clip.model.training


def test_prepare_resizes_and_normalises(tiny_clip):
    gray = torch.full((1, 3, 10, 20), 0.5)
    x = tiny_clip.prepare(gray)
    assert x.shape == (1, 3, 64, 64)
    expected = (0.5 - torch.tensor(tiny_clip.mean)) / torch.tensor(tiny_clip.std)
    assert torch.allclose(x[0, :, 5, 5], expected, atol=1e-5)
    assert torch.allclose(tiny_clip.prepare(gray, normalize=False), torch.full((1, 3, 64, 64), 0.5))


def test_text_encoding_is_cached_and_batch_independent(tiny_clip):
    together = tiny_clip.encode_text(["a red square", "a blue circle", "a red square"])
    alone = tiny_clip.encode_text(["a blue circle"])
    assert torch.allclose(together[1], alone[0], atol=1e-6)
    assert torch.equal(together[0], together[2])
    assert "a red square" in tiny_clip._text_cache
    with torch.no_grad():
        direct = F.normalize(tiny_clip.model.encode_text(tiny_clip.tokenize(["a red square"])).float(), dim=-1)
    assert torch.allclose(together[0], direct[0], atol=1e-6)


def test_text_cache_evicts_least_recent():
    clip = FrozenCLIP("wwbl-tiny-vit", pretrained="random", text_cache_size=2)
    clip.encode_text(["one", "two"])
    clip.encode_text(["one"])
    clip.encode_text(["three"])
    assert list(clip._text_cache) == ["one", "three"]


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_phrase_is_rejected(tiny_clip, bad):
    with pytest.raises(ValueError, match="empty phrase"):
        tiny_clip.encode_text([bad])


def test_local_checkpoint_file_and_directory(tmp_path, tiny_clip):
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(weights))
    from_file = FrozenCLIP("wwbl-tiny-vit", checkpoint=weights)
    model_dir = tmp_path / "tiny_dir"
    model_dir.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()},
              str(model_dir / "open_clip_model.safetensors"))
    config = json.loads((MODEL_CONFIG_DIR / "wwbl-tiny-vit.json").read_text())
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    from_dir = FrozenCLIP(checkpoint=model_dir)
    images = torch.rand(2, 3, 64, 64)
    reference = tiny_clip.encode_image(images)
    assert torch.allclose(from_file.encode_image(images), reference, atol=1e-6)
    assert torch.allclose(from_dir.encode_image(images), reference, atol=1e-6)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(MissingResourceError, match="nope.safetensors"):
        FrozenCLIP("wwbl-tiny-vit", checkpoint=tmp_path / "nope.safetensors")


def test_offline_pretrained_tag_gives_clear_error():
    with pytest.raises(MissingResourceError, match="ViT-B-32.*openai.*checkpoint="):
        FrozenCLIP("ViT-B-32", pretrained="openai")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown open_clip model"):
        FrozenCLIP("no-such-model")


def test_resnet_clip_encodes_but_has_no_relevancy(tiny_rn_clip):
    emb = tiny_rn_clip.encode_image(torch.rand(2, 3, 100, 100))
    assert emb.shape == (2, tiny_rn_clip.embed_dim)
    assert not tiny_rn_clip.is_vit
    with pytest.raises(UnsupportedCLIPError):
        tiny_rn_clip.relevancy(torch.rand(1, 3, 128, 128), tiny_rn_clip.encode_text(["a"]))


def test_full_context_text_encoding_accepts_the_empty_prompt(tiny_clip):
    phrases = ["a red square", "two blue circles"]
    full = tiny_clip.encode_text_full_context(phrases + [""])
    assert full.shape == (3, tiny_clip.embed_dim) and full.dtype == torch.float32
    assert torch.allclose(full.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(full[:2], tiny_clip.encode_text(phrases), atol=1e-5)  # the short-context path agrees
    assert not torch.allclose(full[2], full[0], atol=1e-3)


def _activation_types(clip):
    return {type(m) for m in clip.model.modules() if isinstance(m, (torch.nn.GELU, QuickGELU))}


@pytest.mark.parametrize("model, tag, quick", [
    ("ViT-B-32", "openai", True), ("ViT-B-16", "openai", True), ("RN50", "openai", True),
    ("ViT-L-14", "OpenAI", True), ("ViT-B-32", "laion400m_e31", True), ("ViT-B-32", "laion2b_s34b_b79k", False),
])
def test_quickgelu_trained_tags_are_built_with_quickgelu(monkeypatch, model, tag, quick):
    # Nothing is downloaded: the real create_model builds the tiny architecture with whatever
    # options the adapter passes for (model, tag).

    real, calls = open_clip.create_model, []

    def tiny_instead(name, pretrained=None, **kwargs):
        calls.append((name, pretrained))
        return real("wwbl-tiny-vit", **{k: v for k, v in kwargs.items() if k != "cache_dir"})

    monkeypatch.setattr(open_clip, "create_model", tiny_instead)
    clip = FrozenCLIP(model, pretrained=tag)
    assert calls == [(model, tag)]
    assert _activation_types(clip) == ({QuickGELU} if quick else {torch.nn.GELU})


def test_random_tiny_model_keeps_gelu_and_says_it_is_random(caplog):
    with caplog.at_level("WARNING", logger="wwbl.clip.adapter"):
        clip = FrozenCLIP("wwbl-tiny-vit", pretrained="random")
    assert _activation_types(clip) == {torch.nn.GELU}
    assert "RANDOM weights" in caplog.text and "wwbl-tiny-vit" in caplog.text


@pytest.mark.parametrize("pretrained", [None, "random"])
def test_local_checkpoints_follow_the_declared_activation(tmp_path, tiny_clip, pretrained):
    state = {k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}
    model_dir = tmp_path / "quick_dir"
    model_dir.mkdir()
    save_file(state, str(model_dir / "open_clip_model.safetensors"))
    config = json.loads((MODEL_CONFIG_DIR / "wwbl-tiny-vit.json").read_text())
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": {**config, "quick_gelu": True}}))
    if pretrained == "random":
        with pytest.raises(ValueError, match="contradicts"):
            FrozenCLIP(checkpoint=model_dir, pretrained=pretrained)
        return
    assert _activation_types(FrozenCLIP(checkpoint=model_dir)) == {QuickGELU}
    weights = tmp_path / "openai_like.safetensors"
    save_file(state, str(weights))
    assert _activation_types(FrozenCLIP("wwbl-tiny-vit", pretrained="openai", checkpoint=weights)) == {QuickGELU}
    assert _activation_types(FrozenCLIP("wwbl-tiny-vit", checkpoint=weights)) == {torch.nn.GELU}


def test_no_tag_and_no_checkpoint_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match=r"'openai'.*checkpoint=.*pretrained='random'"):
        FrozenCLIP("ViT-B-32")
    with pytest.raises(ValueError, match="pretrained='random'"):
        FrozenCLIP("wwbl-tiny-vit", pretrained=None)


def test_model_directory_leaves_no_temporary_config_behind(tmp_path, tiny_clip, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model_dir = tmp_path / "dir"
    model_dir.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()},
              str(model_dir / "open_clip_model.safetensors"))
    config = json.loads((MODEL_CONFIG_DIR / "wwbl-tiny-vit.json").read_text())
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    first = FrozenCLIP(checkpoint=model_dir)
    again = FrozenCLIP(checkpoint=model_dir)  # the in-memory registration outlives the deleted file
    assert list(scratch.iterdir()) == []
    images = torch.rand(1, 3, 64, 64)
    assert torch.allclose(first.encode_image(images), again.encode_image(images))
