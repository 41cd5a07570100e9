"""BLIP decoding with each image's cross-attention projected once gives ``generate``'s very tokens."""
import numpy as np
import pytest
import torch

from tests.helpers.tiny_blip import save_tiny_blip
from wwbl.inference.blip_decoding import generate_caption_ids, uses_shared_cross_attention
from wwbl.inference.captioner import BlipCaptioner


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    folder = save_tiny_blip(tmp_path_factory.mktemp("blip"), input_sensitive=True)
    return BlipCaptioner.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def inputs(blip):
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    pixels = blip.processor.image_processor(images=pictures, return_tensors="pt").pixel_values
    prompt = blip.processor.tokenizer(["a picture of "] * len(pictures), return_tensors="pt").input_ids
    return pixels, prompt


def key_rows(model):
    """A list that fills with the row count of every call of a cross-attention key projection."""
    rows, layers = [], model.text_decoder.bert.encoder.layer
    hooks = [layer.crossattention.self.key.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
             for layer in layers]
    return rows, hooks


@pytest.mark.parametrize("settings", [dict(num_beams=3, min_length=5, max_length=16),
                                      dict(num_beams=4, max_length=12, repetition_penalty=1.3),
                                      dict(num_beams=1, max_length=12)])
def test_the_same_token_ids_as_generate_with_projections_once_per_image(blip, inputs, settings):
    pixels, prompt = inputs
    model = blip.model
    assert uses_shared_cross_attention(model, {})  # the installed transformers takes the shortcut
    settings = dict(settings)
    beams = settings.pop("num_beams")
    rows, hooks = key_rows(model)
    try:
        expected = model.generate(pixel_values=pixels, input_ids=prompt, num_beams=beams, **settings)
        plain_rows = list(rows)
        rows.clear()
        got = generate_caption_ids(model, pixels, prompt, num_beams=beams, **settings)
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(got, expected)
    assert len({tuple(row) for row in expected.tolist()}) > 1  # the images get different captions
    layers = len(model.text_decoder.bert.encoder.layer)
    assert plain_rows == [len(pixels) * beams] * layers  # generate projects every beam's copy
    assert rows == [len(pixels)] * layers  # once per image and layer


def test_several_returned_sequences_fall_back_to_generate(blip, inputs):
    pixels, prompt = inputs
    settings = dict(num_beams=3, num_return_sequences=2, max_length=12)
    assert not uses_shared_cross_attention(blip.model, settings)
    expected = blip.model.generate(pixel_values=pixels, input_ids=prompt, **settings)
    settings.pop("num_beams")
    got = generate_caption_ids(blip.model, pixels, prompt, num_beams=3, **settings)
    assert got.shape[0] == 2 * len(pixels) and torch.equal(got, expected)


def test_a_decoder_laid_out_otherwise_falls_back(blip):
    class Elsewhere:
        text_decoder = None
    assert not uses_shared_cross_attention(Elsewhere(), {})
