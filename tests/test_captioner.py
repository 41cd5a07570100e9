"""BLIP captioner (tiny random model built in the test) and the original-checkpoint converter."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny_blip import VOCAB, WORDS, save_tiny_blip, single_thread, tiny_tokenizer  # noqa: F401
from PIL import Image

from wwbl.errors import MissingResourceError
from wwbl.inference.blip_convert import convert_checkpoint
from wwbl.inference.blip_convert import main as convert_main
from wwbl.inference.captioner import BlipCaptioner, CaptionSettings


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return save_tiny_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def captioner(blip_dir):
    return BlipCaptioner.from_pretrained(str(blip_dir), settings=CaptionSettings(max_length=12))


def images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (20 + 7 * i, 30 + 5 * i, 3), dtype=np.uint8)) for i in range(count)]


def test_captions_follow_a_naive_generate_with_the_prompt_stripped(captioner):
    pics = images(3)
    captions = captioner.caption(pics)
    processor, model = captioner.processor, captioner.model
    pixels = processor.image_processor(images=pics, return_tensors="pt").pixel_values
    prompt = processor.tokenizer(["a picture of "] * 3, return_tensors="pt").input_ids
    out = model.generate(pixel_values=pixels, input_ids=prompt, num_beams=3, min_length=5, max_length=12)
    for caption, tokens in zip(captions, out):
        words = [VOCAB[t] for t in tokens.tolist() if VOCAB[t] in WORDS]
        assert words[:3] == ["a", "picture", "of"]          # the prompt is generated as a prefix ...
        expected = " ".join(words[3:]).replace(" ##", "")
        assert caption == expected                           # ... and stripped from the caption
        assert caption and not caption.startswith("a picture of")


def test_chunking_does_not_change_captions(blip_dir):
    pics = images(5)
    whole = BlipCaptioner.from_pretrained(str(blip_dir), settings=CaptionSettings(max_length=10, chunk_size=5))
    chunked = BlipCaptioner.from_pretrained(str(blip_dir), settings=CaptionSettings(max_length=10, chunk_size=2))
    assert chunked.caption(pics) == whole.caption(pics)


def test_region_captions_equal_captions_of_hand_made_crops(captioner):
    pics = images(2, seed=1)
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 12.0], [5.2, 3.7, 29.9, 19.5]]), torch.tensor([[-5.0, 2.0, 100.0, 15.0]])]
    regions = captioner.caption_regions(pics, boxes)
    crops = [pics[0].crop((0, 0, 10, 12)), pics[0].crop((5, 3, 30, 20)), pics[1].crop((0, 2, 35, 15))]
    assert [len(r) for r in regions] == [2, 1]
    assert regions[0] + regions[1] == captioner.caption(crops)


def test_reference_crop_frame(captioner):
    pic = images(1)[0]
    cropper = BlipCaptioner(captioner.model, captioner.processor, CaptionSettings(reference_crop_size=224))
    crop = cropper.crops(pic, torch.tensor([[0.0, 0.0, pic.width / 2, pic.height]]))[0]
    assert crop.size == (112, 224)


def test_missing_weights_raise_a_clear_error(tmp_path):
    with pytest.raises(MissingResourceError, match="blip_convert"):
        BlipCaptioner.from_pretrained(str(tmp_path / "no_such_blip"), allow_download=False)


# ---- converter -------------------------------------------------------------------------------
WIDTH, DEPTH, MLP, PATCH, GRID = 32, 2, 64, 8, 3           # 24 px native, 1 + 9 position tokens
TEXT_LAYERS, MAX_POS = 2, 40


def original_blip_state(seed=0, tied=True):
    """A state dict laid out like Salesforce BLIP's blip_decoder (names and shapes written out here)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g)
    sd = {
        "visual_encoder.cls_token": rand(1, 1, WIDTH),
        "visual_encoder.pos_embed": rand(1, 1 + GRID * GRID, WIDTH),
        "visual_encoder.patch_embed.proj.weight": rand(WIDTH, 3, PATCH, PATCH),
        "visual_encoder.patch_embed.proj.bias": rand(WIDTH),
        "visual_encoder.norm.weight": rand(WIDTH), "visual_encoder.norm.bias": rand(WIDTH),
    }
    for i in range(DEPTH):
        b = f"visual_encoder.blocks.{i}."
        sd.update({b + "norm1.weight": rand(WIDTH), b + "norm1.bias": rand(WIDTH),
                   b + "attn.qkv.weight": rand(3 * WIDTH, WIDTH), b + "attn.qkv.bias": rand(3 * WIDTH),
                   b + "attn.proj.weight": rand(WIDTH, WIDTH), b + "attn.proj.bias": rand(WIDTH),
                   b + "norm2.weight": rand(WIDTH), b + "norm2.bias": rand(WIDTH),
                   b + "mlp.fc1.weight": rand(MLP, WIDTH), b + "mlp.fc1.bias": rand(MLP),
                   b + "mlp.fc2.weight": rand(WIDTH, MLP), b + "mlp.fc2.bias": rand(WIDTH)})
    t = "text_decoder.bert."
    sd.update({t + "embeddings.word_embeddings.weight": rand(len(VOCAB), WIDTH),
               t + "embeddings.position_embeddings.weight": rand(MAX_POS, WIDTH),
               t + "embeddings.position_ids": torch.arange(MAX_POS)[None],
               t + "embeddings.LayerNorm.weight": rand(WIDTH), t + "embeddings.LayerNorm.bias": rand(WIDTH)})
    for i in range(TEXT_LAYERS):
        layer = f"{t}encoder.layer.{i}."
        for block in ("attention", "crossattention"):
            for proj in ("query", "key", "value"):
                sd[f"{layer}{block}.self.{proj}.weight"] = rand(WIDTH, WIDTH)
                sd[f"{layer}{block}.self.{proj}.bias"] = rand(WIDTH)
            sd.update({f"{layer}{block}.output.dense.weight": rand(WIDTH, WIDTH),
                       f"{layer}{block}.output.dense.bias": rand(WIDTH),
                       f"{layer}{block}.output.LayerNorm.weight": rand(WIDTH),
                       f"{layer}{block}.output.LayerNorm.bias": rand(WIDTH)})
        sd.update({layer + "intermediate.dense.weight": rand(MLP, WIDTH), layer + "intermediate.dense.bias": rand(MLP),
                   layer + "output.dense.weight": rand(WIDTH, MLP), layer + "output.dense.bias": rand(WIDTH),
                   layer + "output.LayerNorm.weight": rand(WIDTH), layer + "output.LayerNorm.bias": rand(WIDTH)})
    c = "text_decoder.cls.predictions."
    sd.update({c + "bias": rand(len(VOCAB)), c + "transform.dense.weight": rand(WIDTH, WIDTH),
               c + "transform.dense.bias": rand(WIDTH), c + "transform.LayerNorm.weight": rand(WIDTH),
               c + "transform.LayerNorm.bias": rand(WIDTH)})
    # BLIP ties the LM head to the word embeddings (the saved file holds both names)
    sd[c + "decoder.weight"] = sd[t + "embeddings.word_embeddings.weight"] if tied else rand(len(VOCAB), WIDTH)
    # parts of the pre-training checkpoint that are not the captioner
    sd.update({"visual_encoder_m.cls_token": rand(1, 1, WIDTH), "text_encoder.embeddings.word_embeddings.weight":
               rand(len(VOCAB), WIDTH), "itm_head.weight": rand(2, WIDTH), "temp": torch.tensor(0.07)})
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
    from transformers import BertTokenizerFast

    path = tmp_path_factory.mktemp("bert")
    plain = [t for t in VOCAB if t not in ("[DEC]", "[ENC]")]   # like bert-base-uncased before BLIP's additions
    BertTokenizerFast(vocab={t: i for i, t in enumerate(plain)}).save_pretrained(path)
    return path


def load_converted(path):
    from transformers import BlipForConditionalGeneration

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
    grid = pos[:, 1:].reshape(1, GRID, GRID, WIDTH).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, 36, WIDTH)
    expected["vision_model.embeddings.position_embedding"] = torch.cat([pos[:, :1], grid], dim=1)
    assert set(converted) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(converted[name], value, atol=1e-6), name
    tokenizer = tiny_tokenizer()
    from transformers import BlipProcessor
    processor = BlipProcessor.from_pretrained(out)
    assert processor.tokenizer.bos_token == "[DEC]" and processor.tokenizer.convert_tokens_to_ids("[DEC]") == \
        tokenizer.convert_tokens_to_ids("[DEC]")
    assert processor.image_processor.size["height"] == 48


def naive_vit(sd, pixels, heads=4):
    """timm-style ViT forward written from the original BLIP keys."""
    v = "visual_encoder."
    x = F.conv2d(pixels, sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[v + "cls_token"].expand(len(x), -1, -1), x], dim=1) + sd[v + "pos_embed"]
    ln = lambda t, name: F.layer_norm(t, (WIDTH,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)
    for i in range(DEPTH):
        b = f"{v}blocks.{i}."
        h = ln(x, b + "norm1")
        q, k, val = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        split = lambda t: t.reshape(len(t), -1, heads, WIDTH // heads).transpose(1, 2)
        att = (split(q) @ split(k).transpose(-1, -2) / math.sqrt(WIDTH // heads)).softmax(-1) @ split(val)
        att = att.transpose(1, 2).reshape(len(x), -1, WIDTH)
        x = x + F.linear(att, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = ln(x, b + "norm2")
        h = F.linear(F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
                     sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        x = x + h
    return ln(x, v + "norm")


def test_converted_vision_tower_computes_the_original_forward(tmp_path, tokenizer_dir):
    from transformers import BlipForConditionalGeneration

    original = original_blip_state(seed=1)
    torch.save(original, tmp_path / "bare.pth")                  # a bare state dict is accepted too
    convert_main([str(tmp_path / "bare.pth"), str(tmp_path / "hf"), "--tokenizer", str(tokenizer_dir),
                  "--image-size", "0", "--vision-heads", "4", "--text-heads", "4"])
    model = BlipForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    pixels = torch.randn(2, 3, GRID * PATCH, GRID * PATCH)
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
