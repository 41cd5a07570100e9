"""The BLIP captioner on a tiny random BLIP: captions, chunking, region crops, missing weights."""
import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.tiny_blip import VOCAB, WORDS, save_tiny_blip
from wwbl.errors import MissingResourceError
from wwbl.inference import captioner as captioner_module
from wwbl.inference.blip_decoding import generate_caption_ids
from wwbl.inference.captioner import BlipCaptioner, CaptionSettings
from wwbl.inference.proposals import ProposalGenerator


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


def counting_generate(monkeypatch, captioner, fail_above=None):
    """Wrap the captioner's decoding call: the batch size of every call, in order; calls with more
    than ``fail_above`` images raise CUDA out-of-memory (as a too-large chunk on a GPU would)."""
    sizes = []

    def wrapper(model, pixel_values, *args, **kwargs):
        assert model is captioner.model
        sizes.append(len(pixel_values))
        if fail_above is not None and sizes[-1] > fail_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return generate_caption_ids(model, pixel_values, *args, **kwargs)

    monkeypatch.setattr(captioner_module, "generate_caption_ids", wrapper)
    return sizes


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    """A tiny BLIP whose captions differ between images, so a caption given to the wrong crop shows."""
    folder = save_tiny_blip(tmp_path_factory.mktemp("blip_sensitive"), input_sensitive=True)
    return BlipCaptioner.from_pretrained(str(folder))


def with_settings(captioner, **settings):
    return BlipCaptioner(captioner.model, captioner.processor, CaptionSettings(max_length=10, **settings))


def test_first_of_each_by_hand():
    from wwbl.inference.captioner import _first_of_each

    assert _first_of_each(["a", "b", "a", "c", "b"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert _first_of_each([]) == ([], [])


def test_identical_crops_are_captioned_once_with_the_same_captions(sensitive, monkeypatch):
    pics = images(2, seed=3)
    pics.append(pics[0].copy())  # the same picture again: its crops are byte-identical to the first's
    a, a_rounds_alike, b = [0.0, 0.0, 10.0, 12.0], [0.4, 0.2, 9.6, 11.1], [5.0, 3.0, 20.0, 18.0]
    c, d = [2.0, 2.0, 30.0, 20.0], [8.0, 1.0, 25.0, 19.0]
    boxes = [torch.tensor([a, a_rounds_alike, b]), torch.tensor([c, c]), torch.tensor([a, d])]
    every, shared = with_settings(sensitive, share_identical_crops=False), with_settings(sensitive)
    sizes = counting_generate(monkeypatch, sensitive)  # the model both captioners share
    expected = every.caption_regions(pics, boxes)
    assert len({caption for captions in expected for caption in captions}) >= 3  # a mix-up would show
    assert sizes == [7] and every.captioned == 7
    sizes.clear()
    assert shared.caption_regions(pics, boxes) == expected
    # Distinct crops: a and b of picture 0, c of picture 1, d of picture 2 (its a is picture 0's a).
    assert sizes == [4] and shared.captioned == 4


def test_sharing_on_real_proposals_captions_each_distinct_crop_once(sensitive, monkeypatch):
    pic = images(1, seed=4)[0]  # 20×30: the 224-frame proposals collapse onto few pixel rectangles
    proposals = ProposalGenerator()(pic)
    distinct = {np.asarray(crop).tobytes() + bytes(crop.size) for crop in sensitive.crops(pic, proposals)}
    every = with_settings(sensitive, share_identical_crops=False).caption_regions([pic], [proposals])
    sizes = counting_generate(monkeypatch, sensitive)
    assert with_settings(sensitive).caption_regions([pic], [proposals]) == every
    assert sum(sizes) == len(distinct) < len(proposals)


def test_out_of_memory_halves_the_chunk_and_remembers_it(sensitive, monkeypatch):
    pics = images(7, seed=5)
    expected = with_settings(sensitive, chunk_size=7).caption(pics)
    backing_off = with_settings(sensitive, chunk_size=5)
    sizes = counting_generate(monkeypatch, sensitive, fail_above=2)
    assert backing_off.caption(pics) == expected
    assert sizes == [5, 2, 2, 2, 1]  # 5 fails, halved to 2: 2 + 2 + 2 + the last 1
    assert backing_off.chunk_size == 2 and backing_off.settings.chunk_size == 5
    sizes.clear()
    assert backing_off.caption(pics[:3]) == expected[:3]
    assert sizes == [2, 1]  # the halved chunk is kept for later calls


def test_out_of_memory_on_a_single_crop_is_raised(captioner, monkeypatch):
    backing_off = with_settings(captioner, chunk_size=5)
    sizes = counting_generate(monkeypatch, captioner, fail_above=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        backing_off.caption(images(3, seed=6))
    assert sizes == [3, 1]  # the 3 images fit in one chunk; halved to 1, which fails too


def test_the_sensitive_blip_tells_crops_apart(sensitive):
    """The sharing and back-off tests above rest on this: their images get several different captions."""
    assert len(set(with_settings(sensitive).caption(images(7, seed=5)))) >= 3
    pic = images(1, seed=4)[0]
    assert len(set(with_settings(sensitive).caption_regions([pic], [ProposalGenerator()(pic)])[0])) >= 5
