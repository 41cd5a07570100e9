"""The BLIP captioner on a tiny random BLIP: captions, chunking, region crops, missing weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.tiny_blip import VOCAB, WORDS, save_tiny_blip
from wwbl.errors import MissingResourceError
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
