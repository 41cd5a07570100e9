"""The frozen CLIP adapter on tiny random open_clip models."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from wwbl.clip import FrozenCLIP, UnsupportedCLIPError, register_model_configs
from wwbl.clip.adapter import MODEL_CONFIG_DIR
from wwbl.extractors.clip_text_span import cls_decomposition
from wwbl.errors import MissingResourceError


def test_functional_vit_equals_open_clip(tiny_clip):
    x = tiny_clip.prepare(torch.rand(3, 3, 40, 90))
    ours = tiny_clip.vit.forward(x)
    theirs = tiny_clip.model.encode_image(x)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_functional_vit_applies_layer_scale(tmp_path):
    # The tiny model has no layer scale (ls_1/ls_2 are identities); one with random gammas checks
    # that the accessors apply it, in the forward and in the ClipTextSpan decomposition.
    config = json.loads((MODEL_CONFIG_DIR / "wwbl-tiny-vit.json").read_text())
    config["vision_cfg"]["ls_init_value"] = 0.5
    (tmp_path / "wwbl-test-layer-scale.json").write_text(json.dumps(config))
    register_model_configs(tmp_path / "wwbl-test-layer-scale.json")
    torch.manual_seed(0)
    clip = FrozenCLIP("wwbl-test-layer-scale", pretrained="random")
    gammas = [p for name, p in clip.model.visual.named_parameters() if name.endswith("gamma")]
    assert len(gammas) == 4  # ls_1 and ls_2 of both blocks
    with torch.no_grad():
        for gamma in gammas:
            gamma.uniform_(0.2, 2.0, generator=torch.Generator().manual_seed(gamma.numel()))
        x = clip.prepare(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)))
        theirs = clip.model.encode_image(x)
        parts = cls_decomposition(clip.vit, x)
    assert torch.allclose(clip.vit.forward(x), theirs, atol=1e-5)
    assert torch.allclose(parts.tokens.sum(dim=1) + parts.rest, theirs, atol=1e-4)


def test_functional_vit_notices_a_changed_block(tiny_clip):
    # The equality above must depend on every block: a one-block run differs.
    x = tiny_clip.prepare(torch.rand(2, 3, 64, 64))
    vit = tiny_clip.vit
    partial = vit.head(vit.run_blocks(vit.tokens_in(x), 0, vit.num_layers - 1))
    assert not torch.allclose(partial, tiny_clip.model.encode_image(x), atol=1e-3)


def test_attention_probabilities_match_torch_mha(tiny_clip):
    vit = tiny_clip.vit
    tokens = vit.tokens_in(tiny_clip.prepare(torch.rand(2, 3, 64, 64)))
    block = tiny_clip.model.visual.transformer.resblocks[0]
    normed = block.ln_1(tokens)
    _, probs = vit.attention(0, normed)
    _, torch_probs = block.attn(normed, normed, normed, need_weights=True, average_attn_weights=False)
    assert torch.allclose(probs, torch_probs, atol=1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones_like(probs.sum(-1)), atol=1e-5)


def _naive_last_layer_relevancy(clip: FrozenCLIP, image01: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Chefer's last-block relevancy for one pair, using open_clip's own modules and torch's MHA weights."""
    visual = clip.model.visual
    x = clip.prepare(image01[None])
    tokens = visual._embeds(x) if hasattr(visual, "_embeds") else None
    for block in visual.transformer.resblocks[:-1]:
        tokens = block(tokens)
    last = visual.transformer.resblocks[-1]
    normed = last.ln_1(tokens)
    _, probs = last.attn(normed, normed, normed, need_weights=True, average_attn_weights=False)
    probs = probs.detach().requires_grad_(True)
    heads = last.attn.num_heads
    width = normed.shape[-1]
    v = F.linear(normed, last.attn.in_proj_weight[2 * width:], last.attn.in_proj_bias[2 * width:])
    v = v.reshape(1, -1, heads, width // heads).transpose(1, 2)
    attn_out = last.attn.out_proj((probs @ v).transpose(1, 2).reshape(1, -1, width))
    out = tokens + attn_out
    out = out + last.mlp(last.ln_2(out))
    emb = F.normalize(visual.ln_post(out[:, 0]) @ visual.proj, dim=-1)
    score = clip.logit_scale * (emb * text).sum()
    (grad,) = torch.autograd.grad(score, probs)
    cam = (grad * probs).clamp(min=0).mean(dim=1)[0, 0, 1:]
    side = int(cam.numel() ** 0.5)
    cam = F.interpolate(cam.reshape(1, 1, side, side), size=(clip.image_size,) * 2, mode="bilinear")[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


def test_relevancy_matches_naive_per_pair_computation(tiny_clip):
    torch.manual_seed(1)
    images = torch.rand(3, 3, 64, 64)
    texts = tiny_clip.encode_text(["a red square", "two blue circles", "a green triangle left"])
    batched = tiny_clip.relevancy(images, texts)
    assert batched.shape == (3, 64, 64)
    for i in range(3):
        with torch.enable_grad():
            naive = _naive_last_layer_relevancy(tiny_clip, images[i], texts[i])
        assert torch.allclose(batched[i], naive, atol=1e-4)


def test_relevancy_properties(tiny_clip):
    images = torch.rand(2, 3, 50, 80)
    texts = tiny_clip.encode_text(["a dog", "a cat"])
    last = tiny_clip.relevancy(images, texts)
    rollout = tiny_clip.relevancy(images, texts, start_layer=0)
    explicit_last = tiny_clip.relevancy(images, texts, start_layer=tiny_clip.vit.num_layers - 1)
    for maps in (last, rollout):
        assert maps.min() >= 0 and maps.max() <= 1
        assert torch.allclose(maps.flatten(1).amax(1), torch.ones(2))
        assert not maps.requires_grad
    assert torch.allclose(last, explicit_last)
    assert not torch.allclose(last, rollout)
    # Pairs are independent: the first pair alone gives the same map.
    assert torch.allclose(tiny_clip.relevancy(images[:1], texts[:1]), last[:1], atol=1e-5)


def test_relevancy_requires_one_text_per_image(tiny_clip):
    with pytest.raises(ValueError, match="one text per image"):
        tiny_clip.relevancy(torch.rand(2, 3, 64, 64), tiny_clip.encode_text(["a"]))


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


def test_minmax_normalize_hand_cases():
    from wwbl.clip import minmax_normalize

    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.7, 0.7], [0.7, 0.7]], [[0.0, 0.0], [0.0, 0.0]]])
    out = minmax_normalize(maps)
    assert out[0].tolist() == [[0.0, 0.5], [0.25, 1.0]]
    assert out[1].tolist() == [[1.0, 1.0], [1.0, 1.0]]  # constant positive: everywhere
    assert out[2].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # constant zero: nowhere


def test_short_context_text_encoding_equals_open_clip(tiny_clip):
    from wwbl.clip.text import encode_text_short, supports_short_context

    assert supports_short_context(tiny_clip.model)
    phrases = ["a", "a red square left of two blue circles", " ".join(["word"] * 120)]  # the last is over-long
    tokens = tiny_clip.tokenize(phrases)
    with torch.no_grad():
        full = tiny_clip.model.encode_text(tokens)
        short = encode_text_short(tiny_clip.model, tokens)
        short_only = encode_text_short(tiny_clip.model, tokens[:2])  # cut to 10 tokens, not 77
    assert torch.allclose(short, full, atol=1e-5)
    assert torch.allclose(short_only, full[:2], atol=1e-5)


def test_full_context_text_encoding_accepts_the_empty_prompt(tiny_clip):
    phrases = ["a red square", "two blue circles"]
    full = tiny_clip.encode_text_full_context(phrases + [""])
    assert full.shape == (3, tiny_clip.embed_dim) and full.dtype == torch.float32
    assert torch.allclose(full.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(full[:2], tiny_clip.encode_text(phrases), atol=1e-5)  # the short-context path agrees
    assert not torch.allclose(full[2], full[0], atol=1e-3)


# -- activation and explicit random weights ---------------------------------------------------------
def _activation_types(clip):
    from open_clip.transformer import QuickGELU

    return {type(m) for m in clip.model.modules() if isinstance(m, (torch.nn.GELU, QuickGELU))}


@pytest.mark.parametrize("model, tag, quick", [
    ("ViT-B-32", "openai", True), ("ViT-B-16", "openai", True), ("RN50", "openai", True),
    ("ViT-L-14", "OpenAI", True), ("ViT-B-32", "laion400m_e31", True), ("ViT-B-32", "laion2b_s34b_b79k", False),
])
def test_quickgelu_trained_tags_are_built_with_quickgelu(monkeypatch, model, tag, quick):
    # Nothing is downloaded: the real create_model builds the tiny architecture with whatever
    # options the adapter passes for (model, tag).
    import open_clip
    from open_clip.transformer import QuickGELU

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
    from open_clip.transformer import QuickGELU

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
    import tempfile

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
