"""BLIP caption decoding with the image's cross-attention keys and values computed once.

``BlipForConditionalGeneration.generate`` repeats each image's embeddings once per beam, so every
decoder layer projects the same 577 image tokens to keys and values ``num_beams`` times, and beam
search then reorders those identical copies at every step (``index_select`` over the whole
cross-attention cache: a third of BLIP-base's decoding time on a CPU). :func:`generate_caption_ids`
runs the same decoding with the projections done once per image, repeated over its beams, and a
cache that reorders only the self-attention part — a crop's beams are only ever exchanged among
themselves, so reordering their identical cross-attention copies is the identity. The token ids
are those of ``model.generate`` (``tests/inference/test_blip_decoding.py``).

The shortcut needs transformers' ``EncoderDecoderCache`` as the BLIP text decoder uses it
(transformers 5); elsewhere, or when one image asks for several returned sequences, the plain
``model.generate`` runs: the same captions, at the cost described above.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


@functools.cache
def _beam_shared_cache_class() -> type | None:
    """The cache class of the shortcut, or None where transformers lacks what it needs."""
    try:
        from transformers.cache_utils import EncoderDecoderCache
        from transformers.generation.utils import ALL_CACHE_NAMES
    except ImportError:
        return None
    if "cache" not in ALL_CACHE_NAMES:  # before transformers 5 the decoder's cache was `past_key_values`
        return None

    class BeamSharedCrossAttention(EncoderDecoderCache):
        """Cross-attention filled before decoding and never reordered (module docstring)."""

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.self_attention_cache.reorder_cache(beam_idx)

    return BeamSharedCrossAttention


def _cross_attentions(model: Any) -> list[Any] | None:
    """The text decoder's cross-attention modules in layer order, or None if laid out otherwise."""
    try:
        layers = model.text_decoder.bert.encoder.layer
        modules = [layer.crossattention.self for layer in layers]
    except AttributeError:
        return None
    needed = ("key", "value", "attention_head_size", "layer_idx")
    ok = all(all(hasattr(m, name) for name in needed) and m.layer_idx == i for i, m in enumerate(modules))
    return modules if ok else None


def uses_shared_cross_attention(model: Any, generate_kwargs: dict[str, Any]) -> bool:
    """Whether :func:`generate_caption_ids` takes the shortcut for this model and these settings."""
    return (_beam_shared_cache_class() is not None and _cross_attentions(model) is not None
            and generate_kwargs.get("num_return_sequences", 1) == 1 and "cache" not in generate_kwargs)


def _filled_cache(model: Any, image_embeds: torch.Tensor, copies: int) -> Any:
    from transformers.cache_utils import DynamicCache  # present: _beam_shared_cache_class checked it

    config = model.text_decoder.config
    cross = DynamicCache(config=config)
    batch, tokens = image_embeds.shape[:2]
    for attention in _cross_attentions(model):
        shape = (batch, tokens, -1, attention.attention_head_size)
        keys = attention.key(image_embeds).view(shape).transpose(1, 2).repeat_interleave(copies, dim=0)
        values = attention.value(image_embeds).view(shape).transpose(1, 2).repeat_interleave(copies, dim=0)
        cross.update(keys, values, attention.layer_idx)
    return _beam_shared_cache_class()(DynamicCache(config=config), cross)


@torch.no_grad()
def generate_caption_ids(model: Any, pixel_values: torch.Tensor, prompt_ids: torch.Tensor, num_beams: int,
                         **generate_kwargs: Any) -> torch.Tensor:
    """``model.generate(pixel_values=…, input_ids=prompt_ids, num_beams=…, **generate_kwargs)``'s
    token ids, with each image's cross-attention projected once (module docstring)."""
    if not uses_shared_cross_attention(model, generate_kwargs):
        return model.generate(pixel_values=pixel_values, input_ids=prompt_ids, num_beams=num_beams,
                              **generate_kwargs)
    return decode_with_cache(model, pixel_values, prompt_ids, num_beams,
                             lambda image_embeds: _filled_cache(model, image_embeds, copies=num_beams),
                             **generate_kwargs)


@torch.no_grad()
def decode_with_cache(model: Any, pixel_values: torch.Tensor, prompt_ids: torch.Tensor, num_beams: int,
                      make_cache: Callable[[torch.Tensor], Any], **generate_kwargs: Any) -> torch.Tensor:
    """What ``BlipForConditionalGeneration.generate`` does — the vision tower, then the text
    decoder's ``generate`` from ``[DEC]`` + the prompt without its ``[SEP]`` — with the decoder
    cache ``make_cache(image_embeds)`` (a transformers 5 ``EncoderDecoderCache``)."""
    text_config = model.config.text_config
    image_embeds = model.vision_model(pixel_values=pixel_values)[0]
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    ids = prompt_ids.clone()
    ids[:, 0] = text_config.bos_token_id
    return model.text_decoder.generate(
        input_ids=ids[:, :-1], eos_token_id=text_config.sep_token_id, pad_token_id=text_config.pad_token_id,
        encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask, num_beams=num_beams,
        cache=make_cache(image_embeds), **generate_kwargs)
