"""Short-context text encoding against open_clip's full-context forward."""
import torch

from wwbl.clip.text import encode_text_short, supports_short_context


def test_short_context_text_encoding_equals_open_clip(tiny_clip):
    assert supports_short_context(tiny_clip.model)
    phrases = ["a", "a red square left of two blue circles", " ".join(["word"] * 120)]  # the last is over-long
    tokens = tiny_clip.tokenize(phrases)
    with torch.no_grad():
        full = tiny_clip.model.encode_text(tokens)
        short = encode_text_short(tiny_clip.model, tokens)
        short_only = encode_text_short(tiny_clip.model, tokens[:2])  # cut to 10 tokens, not 77
    assert torch.allclose(short, full, atol=1e-5)
    assert torch.allclose(short_only, full[:2], atol=1e-5)
