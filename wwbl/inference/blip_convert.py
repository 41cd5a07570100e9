"""Convert original Salesforce BLIP / LAVIS caption checkpoints to transformers' BLIP captioner.

Input: ``model_base_capfilt_large.pth`` (the checkpoint the WWbL reference captions with),
``model_base_caption_capfilt_large.pth``, ``model_large*.pth`` or a LAVIS caption checkpoint: a
``torch.save`` of ``{"model": state_dict, ...}`` (or a bare state dict) with the keys
``visual_encoder.*`` (timm-style ViT), ``text_decoder.bert.*`` and ``text_decoder.cls.*``.
Everything else in the file (momentum encoders, ITM/ITC heads, queues) is not part of the
captioner and is ignored.

Output: a folder loadable with ``BlipForConditionalGeneration.from_pretrained`` and
``BlipProcessor.from_pretrained`` (and thus :class:`wwbl.inference.captioner.BlipCaptioner`).

Mapping (explicit, see :func:`_vision_key`): timm's ``blocks.i.{norm1, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}`` become ``encoder.layers.i.{layer_norm1, self_attn.qkv, self_attn.projection,
layer_norm2, mlp.fc1, mlp.fc2}``. transformers keeps the fused ``qkv`` projection with the same
(3, heads, head_dim) row order as timm, so it is copied as a whole (its shape is validated). The text
decoder uses the same BERT names on both sides. The position embedding is interpolated bicubically
(as BLIP's own loader does) when the checkpoint's grid differs from the target image size (224 →
384 for the pre-training checkpoints). The ViT layer-norm epsilon is BLIP's 1e-6.

CLI: ``python -m wwbl.inference.blip_convert in.pth out_dir [--image-size 384] [--tokenizer DIR]``.
"""
from __future__ import annotations

import argparse
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from wwbl.errors import MissingResourceError

_BLOCK_RENAMES = {
    "norm1": "layer_norm1",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "norm2": "layer_norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_VISION_RENAMES = {
    "visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
    "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
    "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "visual_encoder.norm.weight": "vision_model.post_layernorm.weight",
    "visual_encoder.norm.bias": "vision_model.post_layernorm.bias",
}
_BLOCK_KEY = re.compile(r"^visual_encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$")
_UNUSED_TEXT_KEYS = ("text_decoder.bert.embeddings.position_ids",)


def _vision_key(key: str) -> str | None:
    """The transformers name of an original ``visual_encoder.*`` key (None if not a ViT weight)."""
    if key in _VISION_RENAMES:
        return _VISION_RENAMES[key]
    match = _BLOCK_KEY.match(key)
    if match and match.group(2) in _BLOCK_RENAMES:
        index, part, kind = match.groups()
        return f"vision_model.encoder.layers.{index}.{_BLOCK_RENAMES[part]}.{kind}"
    return None


def interpolate_position_embedding(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """``1×(1+g²)×D`` → ``1×(1+grid²)×D``: class token kept, patch grid resized bicubically."""
    old = math.isqrt(pos_embed.shape[1] - 1)
    if old * old != pos_embed.shape[1] - 1:
        raise ValueError(f"position embedding of {pos_embed.shape[1]} tokens is not 1 + a square grid")
    if old == grid:
        return pos_embed
    patches = pos_embed[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], patches], dim=1)


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state if (m := regex.match(key))})


def infer_blip_config(state: Mapping[str, torch.Tensor], image_size: int | None = 384,
                      vision_heads: int | None = None, text_heads: int | None = None,
                      bos_token_id: int | None = None, sep_token_id: int = 102, pad_token_id: int = 0):
    """A ``BlipConfig`` matching the shapes of an original captioner state dict.

    Head counts default to ``hidden // 64`` (true for BLIP's ViT-B/L and BERT-base); ``bos`` defaults
    to ``vocab - 2`` (BLIP appends ``[DEC]`` and ``[ENC]`` to bert-base-uncased's vocabulary).
    ``image_size=None`` keeps the checkpoint's own resolution.
    """
    from transformers import BlipConfig  # lazy: slow to import

    width = state["visual_encoder.cls_token"].shape[-1]
    patch = state["visual_encoder.patch_embed.proj.weight"].shape[-1]
    native = math.isqrt(state["visual_encoder.pos_embed"].shape[1] - 1) * patch
    words = state["text_decoder.bert.embeddings.word_embeddings.weight"]
    cross_key = state["text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"]
    text_width = words.shape[1]
    vision = {
        "hidden_size": width, "patch_size": patch, "image_size": image_size or native,
        "num_hidden_layers": _count(state, r"^visual_encoder\.blocks\.(\d+)\."),
        "intermediate_size": state["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0],
        "num_attention_heads": vision_heads or max(width // 64, 1), "layer_norm_eps": 1e-6,
    }
    text = {
        "vocab_size": words.shape[0], "hidden_size": text_width,
        "num_hidden_layers": _count(state, r"^text_decoder\.bert\.encoder\.layer\.(\d+)\."),
        "intermediate_size": state["text_decoder.bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "num_attention_heads": text_heads or max(text_width // 64, 1),
        "max_position_embeddings": state["text_decoder.bert.embeddings.position_embeddings.weight"].shape[0],
        "encoder_hidden_size": cross_key.shape[1],
        "bos_token_id": words.shape[0] - 2 if bos_token_id is None else bos_token_id,
        "sep_token_id": sep_token_id, "eos_token_id": sep_token_id, "pad_token_id": pad_token_id,
    }
    # BLIP ties the LM head to the word embeddings; a checkpoint that does not stays untied.
    tied = torch.equal(words, state.get("text_decoder.cls.predictions.decoder.weight", words))
    text["tie_word_embeddings"] = tied
    return BlipConfig(vision_config=vision, text_config=text, tie_word_embeddings=tied)


def _captioner_part(raw: Mapping) -> dict[str, torch.Tensor]:
    state = raw.get("model", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping) or "visual_encoder.cls_token" not in state:
        raise ValueError("not a BLIP caption checkpoint: no 'visual_encoder.cls_token' in the state dict")
    return {k: v for k, v in state.items() if k.startswith(("visual_encoder.", "text_decoder."))}


def convert_state_dict(original: Mapping, config) -> dict[str, torch.Tensor]:
    """Map an original BLIP state dict onto transformers' names; every target weight must be filled."""
    from transformers import BlipForConditionalGeneration  # lazy: slow to import

    state = _captioner_part(original)
    with torch.device("meta"):  # shapes only, no memory
        target_shapes = {k: v.shape for k, v in BlipForConditionalGeneration(config).state_dict().items()}
    grid = config.vision_config.image_size // config.vision_config.patch_size
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _UNUSED_TEXT_KEYS:
            continue
        name = key if key.startswith("text_decoder.") else _vision_key(key)
        if name is None:
            raise ValueError(f"unexpected vision key {key!r} in the BLIP checkpoint")
        converted[name] = interpolate_position_embedding(value, grid) if key == "visual_encoder.pos_embed" else value
    bias = "text_decoder.cls.predictions.bias"
    converted.setdefault("text_decoder.cls.predictions.decoder.bias", converted.get(bias))
    missing = sorted(set(target_shapes) - {k for k, v in converted.items() if v is not None})
    unexpected = sorted(set(converted) - set(target_shapes))
    wrong = sorted(k for k in set(converted) & set(target_shapes)
                   if converted[k] is not None and converted[k].shape != target_shapes[k])
    if missing or unexpected or wrong:
        raise ValueError(f"BLIP conversion mismatch: missing {missing}, unexpected {unexpected}, wrong shape {wrong}")
    return {k: converted[k].contiguous() for k in target_shapes}


def blip_tokenizer(source: str):
    """bert-base-uncased (a local folder or a cached hub id) plus BLIP's ``[DEC]`` bos and ``[ENC]``."""
    from transformers import BertTokenizerFast  # lazy: slow to import

    try:
        tokenizer = BertTokenizerFast.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    if tokenizer is None and not Path(source).exists():
        try:  # not cached: a download attempt (works where the hub is reachable)
            tokenizer = BertTokenizerFast.from_pretrained(source)
        except (OSError, ValueError):
            tokenizer = None
    if tokenizer is None:
        raise MissingResourceError(
            f"tokenizer {source!r} is not available. Pass --tokenizer with a folder holding "
            "bert-base-uncased's tokenizer files (vocab.txt or tokenizer.json)."
        )
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _load_weights_only(path: Path) -> Mapping:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, which are not unpickled for safety "
            f"({error}). If you trust the file, re-save only its weights: "
            "torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth')"
        ) from error


def convert_checkpoint(checkpoint: str | Path, out_dir: str | Path, tokenizer: str = "bert-base-uncased",
                       image_size: int | None = 384, vision_heads: int | None = None,
                       text_heads: int | None = None) -> Path:
    """Convert ``checkpoint`` and write model + processor to ``out_dir`` (returned)."""
    from transformers import BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor  # lazy: slow to import

    path = Path(checkpoint)
    if not path.is_file():
        raise MissingResourceError(f"BLIP checkpoint {path} does not exist; download it from the Salesforce BLIP "
                                   "README (e.g. model_base_capfilt_large.pth) and pass its path")
    text_tokenizer = blip_tokenizer(tokenizer)
    raw = _load_weights_only(path)
    config = infer_blip_config(_captioner_part(raw), image_size, vision_heads, text_heads,
                               bos_token_id=text_tokenizer.bos_token_id, sep_token_id=text_tokenizer.sep_token_id,
                               pad_token_id=text_tokenizer.pad_token_id)
    if len(text_tokenizer) != config.text_config.vocab_size:
        raise ValueError(f"tokenizer has {len(text_tokenizer)} tokens but the checkpoint's vocabulary has "
                         f"{config.text_config.vocab_size}")
    model = BlipForConditionalGeneration(config)
    model.load_state_dict(convert_state_dict(raw, config), strict=True)
    out = Path(out_dir)
    model.save_pretrained(out)
    size = config.vision_config.image_size
    BlipProcessor(BlipImageProcessor(size={"height": size, "width": size}), text_tokenizer).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="original BLIP/LAVIS caption checkpoint (.pth)")
    parser.add_argument("out_dir", help="output folder (transformers save_pretrained layout)")
    parser.add_argument("--tokenizer", default="bert-base-uncased",
                        help="bert-base-uncased tokenizer: a local folder or a cached hub id")
    parser.add_argument("--image-size", type=int, default=384, help="target resolution (0 = keep the checkpoint's)")
    parser.add_argument("--vision-heads", type=int, default=None)
    parser.add_argument("--text-heads", type=int, default=None)
    args = parser.parse_args(argv)
    out = convert_checkpoint(args.checkpoint, args.out_dir, args.tokenizer, args.image_size or None,
                             args.vision_heads, args.text_heads)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
