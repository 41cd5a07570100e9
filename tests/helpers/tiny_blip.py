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


def save_tiny_blip(out_dir: Path, favourite_word: str | None = None, seed: int = 0) -> Path:
    """Save a tiny BLIP + processor; ``favourite_word`` biases the decoder to always emit that word
    (so every image gets the same caption), otherwise special tokens are merely discouraged."""
    from transformers import BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(tiny_blip_config())
    with torch.no_grad():
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
