"""CLIP text encoding cut to the batch's longest phrase.

open_clip's `CLIP.encode_text` always runs the full context (77 tokens). For the usual text tower
— causal attention, pooled at the end-of-text token (the argmax token id) — positions after a
phrase's end-of-text token cannot influence its embedding, so the batch can be cut to its
longest tokenised phrase: the same embeddings, several times faster for short phrases such as
captions. Other towers use open_clip's own `encode_text`. Like `vit.py`, this reads open_clip's
parameters directly; `tests/clip/test_text.py` checks it against `encode_text`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

_PAD_ID = 0  # open_clip's SimpleTokenizer pads with zeros after the end-of-text token


def supports_short_context(model: nn.Module) -> bool:
    """True for towers whose embedding depends only on the tokens up to end-of-text."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    return (all(hasattr(model, name) for name in needed) and model.attn_mask is not None
            and getattr(model, "text_pool_type", None) == "argmax")


def encode_text_short(model: nn.Module, tokens: Tensor) -> Tensor:
    """`model.encode_text(tokens)` (unnormalised) computed on the shortest context that holds every phrase."""
    length = max(1, int((tokens != _PAD_ID).sum(dim=1).max()))
    tokens = tokens[:, :length]
    x = model.token_embedding(tokens)
    x = x + model.positional_embedding[:length].to(x.dtype)
    mask = model.attn_mask[:length, :length]
    if getattr(model.transformer, "batch_first", True):
        x = model.transformer(x, attn_mask=mask)
    else:
        x = model.transformer(x.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    proj = model.text_projection
    if isinstance(proj, nn.Linear):
        return proj(x)
    return x @ proj if proj is not None else x
