"""The BLIP converter against the full key set of ``model_base_capfilt_large.pth`` (BLIP-base pre-training).

The key list is written here from Salesforce BLIP's code: ``blip_pretrain.py::BLIP_Pretrain`` holds
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

import pytest
import torch
import torch.nn.functional as F

from wwbl.inference.blip_convert import convert_state_dict, infer_blip_config

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
    from transformers import BlipForConditionalGeneration

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
    from transformers.models.blip.modeling_blip import BlipAttention

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
