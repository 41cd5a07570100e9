"""The BLIP checkpoint converter, checked twice with two key maps written independently of it and of
each other (two references, not a duplicate):

1. Against the full key set of ``model_base_capfilt_large.pth`` (BLIP-base pre-training; BLIP-base
   sizes, ``expected_destination``): shapes only.
2. On a tiny state dict in the layout of Salesforce BLIP's ``blip_decoder`` (``TINY_*`` sizes,
   ``expected_name``): every value lands where it should, and the converted vision tower computes the
   original forward.

Part 1. The key list is written here from Salesforce BLIP's code: ``blip_pretrain.py::BLIP_Pretrain`` holds
``visual_encoder`` (``vit.py`` VisionTransformer, ViT-B/16 at the pre-training resolution 224, no
classifier head), ``text_encoder`` (``med.py`` BertModel with cross-attention, no pooler), ``text_decoder``
(``med.py`` BertLMHeadModel with cross-attention), the ITC projections ``vision_proj``/``text_proj``
(to 256), ``itm_head``, the momentum copies ``visual_encoder_m``/``vision_proj_m``/``text_encoder_m``/
``text_proj_m``, ``temp`` and the queues ``image_queue``/``text_queue`` (256×57600) with ``queue_ptr``.
``med.py``'s BertEmbeddings has no token-type embeddings and keeps ``position_ids`` as a persistent
buffer; the LM head's ``decoder.bias`` is the same Parameter as ``predictions.bias`` and is saved under
both names.

Uncertain (the file itself was not inspected): whether the released file still holds the momentum
models and the queues (BLIP's ``load_checkpoint`` loads it with ``strict=False``, which suggests it
does) and whether it stores ``cls.predictions.decoder.bias`` separately. Either way the converter must
produce the same result, since all of those are dropped or re-derived.

Tensors live on the meta device (shapes only; the real file is ~2.4 GB) except the few whose values
are checked.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import BlipForConditionalGeneration, BertTokenizerFast, BlipProcessor
from transformers.models.blip.modeling_blip import BlipAttention

from tests.helpers.tiny_blip import VOCAB as TINY_VOCAB, tiny_tokenizer
from wwbl.errors import MissingResourceError
from wwbl.inference.blip_convert import convert_state_dict, infer_blip_config, convert_checkpoint, main as convert_main


HIDDEN, LAYERS, HEADS, MLP, VOCAB, MAX_POS = 768, 12, 12, 3072, 30524, 512
PATCH, PRETRAIN_IMAGE, TARGET_IMAGE, EMBED, QUEUE = 16, 224, 384, 256, 57600
REAL = ("visual_encoder.blocks.3.attn.qkv.weight", "visual_encoder.blocks.3.attn.qkv.bias",
        "visual_encoder.blocks.3.attn.proj.weight", "visual_encoder.blocks.3.attn.proj.bias",
        "visual_encoder.pos_embed", "visual_encoder.cls_token",
        "text_decoder.bert.encoder.layer.5.crossattention.self.key.weight",
        "text_decoder.bert.embeddings.word_embeddings.weight")


# Not part of the captioner: knowingly dropped by the converter.
DROPPED_PREFIXES = ("visual_encoder_m.", "text_encoder.", "text_encoder_m.", "vision_proj.", "vision_proj_m.",
                    "text_proj.", "text_proj_m.", "itm_head.")
DROPPED_KEYS = {"temp", "image_queue", "text_queue", "queue_ptr", "text_decoder.bert.embeddings.position_ids"}


def vit_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    grid = PRETRAIN_IMAGE // PATCH
    shapes = {f"{prefix}cls_token": (1, 1, HIDDEN), f"{prefix}pos_embed": (1, 1 + grid * grid, HIDDEN),
              f"{prefix}patch_embed.proj.weight": (HIDDEN, 3, PATCH, PATCH),
              f"{prefix}patch_embed.proj.bias": (HIDDEN,),
              f"{prefix}norm.weight": (HIDDEN,), f"{prefix}norm.bias": (HIDDEN,)}
    for i in range(LAYERS):
        b = f"{prefix}blocks.{i}."
        for name, shape in (("norm1", (HIDDEN,)), ("attn.qkv", (3 * HIDDEN, HIDDEN)), ("attn.proj", (HIDDEN, HIDDEN)),
                            ("norm2", (HIDDEN,)), ("mlp.fc1", (MLP, HIDDEN)), ("mlp.fc2", (HIDDEN, MLP))):
            shapes[f"{b}{name}.weight"] = shape
            shapes[f"{b}{name}.bias"] = (shape[0],)
    return shapes


def linear(name: str, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_features, in_features), f"{name}.bias": (out_features,)}


def layer_norm(name: str) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (HIDDEN,), f"{name}.bias": (HIDDEN,)}


def bert_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    """``med.py`` BertModel with cross-attention in every layer and no pooler."""
    e = f"{prefix}embeddings."
    shapes = {f"{e}position_ids": (1, MAX_POS), f"{e}word_embeddings.weight": (VOCAB, HIDDEN),
              f"{e}position_embeddings.weight": (MAX_POS, HIDDEN), **layer_norm(f"{e}LayerNorm")}
    for i in range(LAYERS):
        layer = f"{prefix}encoder.layer.{i}."
        for block in ("attention", "crossattention"):
            for proj in ("query", "key", "value"):
                shapes.update(linear(f"{layer}{block}.self.{proj}", HIDDEN, HIDDEN))
            shapes.update(linear(f"{layer}{block}.output.dense", HIDDEN, HIDDEN))
            shapes.update(layer_norm(f"{layer}{block}.output.LayerNorm"))
        shapes.update(linear(f"{layer}intermediate.dense", MLP, HIDDEN))
        shapes.update(linear(f"{layer}output.dense", HIDDEN, MLP))
        shapes.update(layer_norm(f"{layer}output.LayerNorm"))
    return shapes


def blip_base_capfilt_large_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``model_base_capfilt_large.pth``'s ``model`` state dict."""
    c = "text_decoder.cls.predictions."
    head = {f"{c}bias": (VOCAB,), **linear(f"{c}transform.dense", HIDDEN, HIDDEN),
            **layer_norm(f"{c}transform.LayerNorm"),
            f"{c}decoder.weight": (VOCAB, HIDDEN), f"{c}decoder.bias": (VOCAB,)}
    return {
        **vit_shapes("visual_encoder."), **bert_shapes("text_encoder."), **bert_shapes("text_decoder.bert."), **head,
        **linear("vision_proj", EMBED, HIDDEN), **linear("text_proj", EMBED, HIDDEN), **linear("itm_head", 2, HIDDEN),
        **vit_shapes("visual_encoder_m."), **bert_shapes("text_encoder_m."),
        **linear("vision_proj_m", EMBED, HIDDEN), **linear("text_proj_m", EMBED, HIDDEN),
        "temp": (), "image_queue": (EMBED, QUEUE), "text_queue": (EMBED, QUEUE), "queue_ptr": (1,),
    }


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    """Meta tensors with the checkpoint's names and shapes; real random values for the checked ones."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) if k in REAL else torch.empty(s, device="meta")
             for k, s in blip_base_capfilt_large_shapes().items()}
    # BLIP ties the LM head to the word embeddings: both names hold the same tensor in the file.
    state["text_decoder.cls.predictions.decoder.weight"] = state["text_decoder.bert.embeddings.word_embeddings.weight"]
    return state


@pytest.fixture(scope="module")
def config(source):
    return infer_blip_config(source, image_size=TARGET_IMAGE)


@pytest.fixture(scope="module")
def converted(source, config) -> dict[str, torch.Tensor]:
    return convert_state_dict({"model": source, "epoch": 19}, config)


def expected_destination(key: str) -> str:
    """transformers' name for a captioner key (written out independently of the converter)."""
    fixed = {"visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
             "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
             "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
             "visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
             "visual_encoder.norm.weight": "vision_model.post_layernorm.weight",
             "visual_encoder.norm.bias": "vision_model.post_layernorm.bias"}
    if key in fixed:
        return fixed[key]
    block = re.match(r"visual_encoder\.blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc[12])\.(\w+)$", key)
    if block:
        part = {"norm1": "layer_norm1", "attn.qkv": "self_attn.qkv", "attn.proj": "self_attn.projection",
                "norm2": "layer_norm2"}.get(block.group(2), block.group(2))
        return f"vision_model.encoder.layers.{block.group(1)}.{part}.{block.group(3)}"
    assert key.startswith("text_decoder."), key
    return key


def is_dropped(key: str) -> bool:
    return key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES)


def test_inferred_config_is_blip_base_at_384(config):
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (768, 12, 12, 3072)
    assert (v.patch_size, v.image_size, v.layer_norm_eps) == (16, 384, 1e-6)
    assert (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.num_attention_heads) == (30524, 768, 12, 12)
    assert (t.intermediate_size, t.max_position_embeddings, t.encoder_hidden_size) == (3072, 512, 768)
    assert t.bos_token_id == 30522 and config.tie_word_embeddings


def test_every_key_is_consumed_or_knowingly_dropped(source, converted):
    consumed = set()
    for key, value in source.items():
        if is_dropped(key):
            continue
        destination = converted[expected_destination(key)]
        if key == "visual_encoder.pos_embed":
            assert destination.shape == (1, 1 + (TARGET_IMAGE // PATCH) ** 2, HIDDEN)
        else:
            assert destination is value, key  # the very tensor, not a copy
        consumed.add(key)
    dropped = set(source) - consumed  # whatever the converter took from these, strict loading would refuse
    assert {k for k in dropped if not k.startswith(DROPPED_PREFIXES)} == DROPPED_KEYS
    assert all(any(k.startswith(p) for k in dropped) for p in DROPPED_PREFIXES)
    # ViT 6 + 12 blocks × 12; BERT embeddings 4 + 12 layers × 26; LM head 7 (counted by hand)
    assert len(consumed) == 6 + 12 * 12 + 4 + 12 * 26 + 7 == 473


def test_result_loads_strictly_into_blip_for_conditional_generation(converted, config):
    with torch.device("meta"):
        model = BlipForConditionalGeneration(config)
    target = model.state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    model.load_state_dict(converted, strict=True, assign=True)  # raises on any missing/unexpected key or shape


def test_position_embedding_is_interpolated_and_class_token_kept(source, converted):
    original = source["visual_encoder.pos_embed"]
    grid = original[:, 1:].reshape(1, 14, 14, HIDDEN).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(24, 24), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    expected = torch.cat([original[:, :1], grid.reshape(1, 576, HIDDEN)], dim=1)
    assert torch.allclose(converted["vision_model.embeddings.position_embedding"], expected, atol=1e-6)
    assert torch.equal(converted["vision_model.embeddings.class_embedding"], source["visual_encoder.cls_token"])
    assert converted["text_decoder.bert.encoder.layer.5.crossattention.self.key.weight"] is \
        source["text_decoder.bert.encoder.layer.5.crossattention.self.key.weight"]


def test_fused_qkv_splits_into_the_heads_transformers_expects(source, converted, config):
    """transformers' BlipAttention with the converted block-3 weights computes timm's attention of the source."""
    attention = BlipAttention(config.vision_config).eval()
    prefix = "vision_model.encoder.layers.3.self_attn."
    attention.load_state_dict({k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}, strict=True)
    x = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(1))
    b = "visual_encoder.blocks.3.attn."
    q, k, v = F.linear(x, source[b + "qkv.weight"], source[b + "qkv.bias"]).chunk(3, dim=-1)
    heads = lambda t: t.reshape(2, 5, HEADS, HIDDEN // HEADS).transpose(1, 2)
    weights = (heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(HIDDEN // HEADS)).softmax(-1)
    mixed = (weights @ heads(v)).transpose(1, 2).reshape(2, 5, HIDDEN)
    expected = F.linear(mixed, source[b + "proj.weight"], source[b + "proj.bias"])
    with torch.no_grad():
        ours = attention(x)[0]
    assert torch.allclose(ours, expected, atol=1e-4)


# ---- part 2: the tiny blip_decoder state dict ----------------------------------------------
TINY_WIDTH, TINY_DEPTH, TINY_MLP, TINY_PATCH, TINY_GRID = 32, 2, 64, 8, 3  # 24 px native, 1 + 9 position tokens
TINY_TEXT_LAYERS, TINY_MAX_POS = 2, 40


def original_blip_state(seed=0, tied=True):
    """A state dict laid out like Salesforce BLIP's blip_decoder (names and shapes written out here)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g)
    sd = {
        "visual_encoder.cls_token": rand(1, 1, TINY_WIDTH),
        "visual_encoder.pos_embed": rand(1, 1 + TINY_GRID * TINY_GRID, TINY_WIDTH),
        "visual_encoder.patch_embed.proj.weight": rand(TINY_WIDTH, 3, TINY_PATCH, TINY_PATCH),
        "visual_encoder.patch_embed.proj.bias": rand(TINY_WIDTH),
        "visual_encoder.norm.weight": rand(TINY_WIDTH), "visual_encoder.norm.bias": rand(TINY_WIDTH),
    }
    for i in range(TINY_DEPTH):
        b = f"visual_encoder.blocks.{i}."
        sd.update({b + "norm1.weight": rand(TINY_WIDTH), b + "norm1.bias": rand(TINY_WIDTH),
                   b + "attn.qkv.weight": rand(3 * TINY_WIDTH, TINY_WIDTH), b + "attn.qkv.bias": rand(3 * TINY_WIDTH),
                   b + "attn.proj.weight": rand(TINY_WIDTH, TINY_WIDTH), b + "attn.proj.bias": rand(TINY_WIDTH),
                   b + "norm2.weight": rand(TINY_WIDTH), b + "norm2.bias": rand(TINY_WIDTH),
                   b + "mlp.fc1.weight": rand(TINY_MLP, TINY_WIDTH), b + "mlp.fc1.bias": rand(TINY_MLP),
                   b + "mlp.fc2.weight": rand(TINY_WIDTH, TINY_MLP), b + "mlp.fc2.bias": rand(TINY_WIDTH)})
    t = "text_decoder.bert."
    sd.update({t + "embeddings.word_embeddings.weight": rand(len(TINY_VOCAB), TINY_WIDTH),
               t + "embeddings.position_embeddings.weight": rand(TINY_MAX_POS, TINY_WIDTH),
               t + "embeddings.position_ids": torch.arange(TINY_MAX_POS)[None],
               t + "embeddings.LayerNorm.weight": rand(TINY_WIDTH), t + "embeddings.LayerNorm.bias": rand(TINY_WIDTH)})
    for i in range(TINY_TEXT_LAYERS):
        layer = f"{t}encoder.layer.{i}."
        for block in ("attention", "crossattention"):
            for proj in ("query", "key", "value"):
                sd[f"{layer}{block}.self.{proj}.weight"] = rand(TINY_WIDTH, TINY_WIDTH)
                sd[f"{layer}{block}.self.{proj}.bias"] = rand(TINY_WIDTH)
            sd.update({f"{layer}{block}.output.dense.weight": rand(TINY_WIDTH, TINY_WIDTH),
                       f"{layer}{block}.output.dense.bias": rand(TINY_WIDTH),
                       f"{layer}{block}.output.LayerNorm.weight": rand(TINY_WIDTH),
                       f"{layer}{block}.output.LayerNorm.bias": rand(TINY_WIDTH)})
        sd.update({layer + "intermediate.dense.weight": rand(TINY_MLP, TINY_WIDTH),
                   layer + "intermediate.dense.bias": rand(TINY_MLP),
                   layer + "output.dense.weight": rand(TINY_WIDTH, TINY_MLP),
                   layer + "output.dense.bias": rand(TINY_WIDTH),
                   layer + "output.LayerNorm.weight": rand(TINY_WIDTH),
                   layer + "output.LayerNorm.bias": rand(TINY_WIDTH)})
    c = "text_decoder.cls.predictions."
    sd.update({c + "bias": rand(len(TINY_VOCAB)), c + "transform.dense.weight": rand(TINY_WIDTH, TINY_WIDTH),
               c + "transform.dense.bias": rand(TINY_WIDTH), c + "transform.LayerNorm.weight": rand(TINY_WIDTH),
               c + "transform.LayerNorm.bias": rand(TINY_WIDTH)})
    # BLIP ties the LM head to the word embeddings (the saved file holds both names)
    tied_weight = sd[t + "embeddings.word_embeddings.weight"]
    sd[c + "decoder.weight"] = tied_weight if tied else rand(len(TINY_VOCAB), TINY_WIDTH)
    # parts of the pre-training checkpoint that are not the captioner
    sd.update({"visual_encoder_m.cls_token": rand(1, 1, TINY_WIDTH), "text_encoder.embeddings.word_embeddings.weight":
               rand(len(TINY_VOCAB), TINY_WIDTH), "itm_head.weight": rand(2, TINY_WIDTH), "temp": torch.tensor(0.07)})
    return sd


def expected_name(key):
    """The transformers name of an original key, written independently of the converter."""
    fixed = {"visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
             "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
             "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
             "visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
             "visual_encoder.norm.weight": "vision_model.post_layernorm.weight",
             "visual_encoder.norm.bias": "vision_model.post_layernorm.bias"}
    if key in fixed:
        return fixed[key]
    if key.startswith("visual_encoder.blocks."):
        index, rest = key[len("visual_encoder.blocks."):].split(".", 1)
        rest = rest.replace("norm1", "layer_norm1").replace("norm2", "layer_norm2")
        rest = rest.replace("attn.qkv", "self_attn.qkv").replace("attn.proj", "self_attn.projection")
        return f"vision_model.encoder.layers.{index}.{rest}"
    return key


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    plain = [t for t in TINY_VOCAB if t not in ("[DEC]", "[ENC]")]   # like bert-base-uncased before BLIP's additions
    BertTokenizerFast(vocab={t: i for i, t in enumerate(plain)}).save_pretrained(path)
    return path


def load_converted(path):
    return BlipForConditionalGeneration.from_pretrained(path).state_dict()


@pytest.mark.parametrize("tied", [True, False])
def test_converter_fills_every_parameter_and_interpolates_positions(tmp_path, tokenizer_dir, tied):
    original = original_blip_state(tied=tied)
    torch.save({"model": original, "epoch": 3}, tmp_path / "model_base_capfilt_large.pth")
    out = convert_checkpoint(tmp_path / "model_base_capfilt_large.pth", tmp_path / "hf", str(tokenizer_dir),
                             image_size=48, vision_heads=4, text_heads=4)
    converted = load_converted(out)
    expected = {expected_name(k): v for k, v in original.items()
                if k.startswith(("visual_encoder.", "text_decoder.")) and not k.endswith("position_ids")}
    expected["text_decoder.cls.predictions.decoder.bias"] = original["text_decoder.cls.predictions.bias"]
    pos = original["visual_encoder.pos_embed"]
    grid = pos[:, 1:].reshape(1, TINY_GRID, TINY_GRID, TINY_WIDTH).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, 36, TINY_WIDTH)
    expected["vision_model.embeddings.position_embedding"] = torch.cat([pos[:, :1], grid], dim=1)
    assert set(converted) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(converted[name], value, atol=1e-6), name
    tokenizer = tiny_tokenizer()
    processor = BlipProcessor.from_pretrained(out)
    assert processor.tokenizer.bos_token == "[DEC]" and processor.tokenizer.convert_tokens_to_ids("[DEC]") == \
        tokenizer.convert_tokens_to_ids("[DEC]")
    assert processor.image_processor.size["height"] == 48


def naive_vit(sd, pixels, heads=4):
    """timm-style ViT forward written from the original BLIP keys."""
    v = "visual_encoder."
    x = F.conv2d(pixels, sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=TINY_PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[v + "cls_token"].expand(len(x), -1, -1), x], dim=1) + sd[v + "pos_embed"]
    ln = lambda t, name: F.layer_norm(t, (TINY_WIDTH,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)
    for i in range(TINY_DEPTH):
        b = f"{v}blocks.{i}."
        h = ln(x, b + "norm1")
        q, k, val = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        split = lambda t: t.reshape(len(t), -1, heads, TINY_WIDTH // heads).transpose(1, 2)
        att = (split(q) @ split(k).transpose(-1, -2) / math.sqrt(TINY_WIDTH // heads)).softmax(-1) @ split(val)
        att = att.transpose(1, 2).reshape(len(x), -1, TINY_WIDTH)
        x = x + F.linear(att, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = ln(x, b + "norm2")
        h = F.linear(F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
                     sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        x = x + h
    return ln(x, v + "norm")


def test_converted_vision_tower_computes_the_original_forward(tmp_path, tokenizer_dir):
    original = original_blip_state(seed=1)
    torch.save(original, tmp_path / "bare.pth")                  # a bare state dict is accepted too
    convert_main([str(tmp_path / "bare.pth"), str(tmp_path / "hf"), "--tokenizer", str(tokenizer_dir),
                  "--image-size", "0", "--vision-heads", "4", "--text-heads", "4"])
    model = BlipForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    pixels = torch.randn(2, 3, TINY_GRID * TINY_PATCH, TINY_GRID * TINY_PATCH)
    with torch.no_grad():
        ours = model.vision_model(pixel_values=pixels).last_hidden_state
    assert torch.allclose(ours, naive_vit(original, pixels), atol=1e-4)


def test_converter_errors(tmp_path, tokenizer_dir):
    with pytest.raises(MissingResourceError):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "out", str(tokenizer_dir))
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a BLIP caption checkpoint"):
        convert_checkpoint(tmp_path / "other.pth", tmp_path / "out", str(tokenizer_dir))
    broken = original_blip_state()
    del broken["visual_encoder.blocks.1.mlp.fc2.bias"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="mlp.fc2.bias"):
        convert_checkpoint(tmp_path / "broken.pth", tmp_path / "out", str(tokenizer_dir), vision_heads=4, text_heads=4)


def test_converter_refuses_pickled_objects(tmp_path, tokenizer_dir):
    torch.save({"model": original_blip_state(), "config": Path("not/a/tensor")}, tmp_path / "objects.pth")
    with pytest.raises(ValueError, match="re-save only its weights"):
        convert_checkpoint(tmp_path / "objects.pth", tmp_path / "out", str(tokenizer_dir))
