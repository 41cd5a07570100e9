"""A tiny random BLIP captioner for the inference tests (built from configs, nothing downloaded)."""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "picture", "of", "dog", "cat", "red", "blue", "the", "on", "ball", "tree", "sky", "##s"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIALS + WORDS + ["[DEC]", "[ENC]"]  # BLIP appends [DEC] and [ENC] to BERT's vocabulary


def tiny_tokenizer():
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tokenizer


def tiny_blip_config(image_size: int = 32):
    from transformers import BlipConfig

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": image_size, "patch_size": 8, "layer_norm_eps": 1e-6}
    text = {"vocab_size": len(VOCAB), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 40, "encoder_hidden_size": 32,
            "bos_token_id": VOCAB.index("[DEC]"), "sep_token_id": VOCAB.index("[SEP]"),
            "eos_token_id": VOCAB.index("[SEP]"), "pad_token_id": 0}
    return BlipConfig(vision_config=vision, text_config=text)


def save_tiny_blip(out_dir: Path, favourite_word: str | None = None, seed: int = 0,
                   input_sensitive: bool = False) -> Path:
    """Save a tiny BLIP + processor; ``favourite_word`` biases the decoder to always emit that word
    (so every image gets the same caption), otherwise special tokens are merely discouraged.

    By default every image gets nearly the same caption (BLIP initialises its vision tower at std
    1e-10). ``input_sensitive``: vision weights at std 0.02 and the decoder's cross-attention value and
    output ×10, so that different images get different captions (for tests that must tell them apart)."""
    from transformers import BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    torch.manual_seed(seed)
    config = tiny_blip_config()
    if input_sensitive:
        config.vision_config.initializer_range = 0.02
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        if input_sensitive:
            for name, weight in model.text_decoder.named_parameters():
                if "crossattention" in name and ("value" in name or "output.dense" in name) and weight.dim() == 2:
                    weight.mul_(10.0)
        bias = model.text_decoder.cls.predictions.bias
        for token in SPECIALS + ["[DEC]", "[ENC]"]:
            if token != "[SEP]":
                bias[VOCAB.index(token)] = -30.0
        if favourite_word is not None:
            bias[VOCAB.index(favourite_word)] = 30.0
        model.text_decoder.cls.predictions.decoder.bias.copy_(bias)
    model.save_pretrained(out_dir)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tiny_tokenizer()).save_pretrained(out_dir)
    return out_dir
