"""The working resolution (``max_side``): large images are processed on a downscaled copy and their
results come back in the original frame; the API takes every image type or refuses it clearly."""
import numpy as np
import pytest
import torch
from PIL import Image

from tests.inference.test_pipeline import TwoSpots, spot_boxes
from wwbl.boxes import Detections
from wwbl.errors import ImageLoadError
from wwbl.inference.api import WWbLModel
from wwbl.inference.results import DetectionResult, GroundingResult, in_frame


class SizeRecorder(TwoSpots):
    """TwoSpots that notes the size of every image it is given."""

    seen: list

    def heatmaps(self, images, phrases, **kwargs):
        self.seen.extend(image.size for image in images)
        return super().heatmaps(images, phrases, **kwargs)


@pytest.fixture
def recorder(tiny_clip):
    extractor = SizeRecorder(tiny_clip, input_size=64)
    extractor.seen = []
    return extractor


def test_in_frame_scales_each_axis_and_resizes_the_maps():
    heat = torch.zeros(1, 50, 100)  # working frame: 100 wide, 50 high; the left half hot
    heat[:, :, :50] = 1.0
    detections = Detections(torch.tensor([[10.0, 5, 40, 25]]), torch.tensor([0.9]), ["a dog"])
    proposals = torch.tensor([[0.0, 0, 100, 50], [20, 10, 30, 20]])
    work = DetectionResult((50, 100), ["a dog"], heat, detections, proposals=proposals)
    result = in_frame(work, (100, 300))  # ×3 in x, ×2 in y
    assert result.image_size == (100, 300)
    assert result.detections.boxes.tolist() == [[30.0, 10.0, 120.0, 50.0]]
    assert result.proposals.tolist() == [[0.0, 0.0, 300.0, 100.0], [60.0, 20.0, 90.0, 40.0]]
    assert result.detections.scores.tolist() == pytest.approx([0.9]) and result.detections.phrases == ["a dog"]
    assert result.heatmaps.shape == (1, 100, 300)
    assert (result.heatmaps[0, :, :147] == 1).all() and (result.heatmaps[0, :, 153:] == 0).all()
    assert in_frame(work, (50, 100)) is work  # already the original frame


def test_a_large_image_is_worked_on_downscaled_and_answered_in_its_frame(recorder):
    model = WWbLModel(recorder, scoring=None, max_side=100)
    result = model.ground(torch.rand(3, 200, 400), ["a dog"])  # 400 wide → a 100×50 working copy
    assert recorder.seen == [(100, 50)]
    assert result.image_size == (200, 400) and result.heatmaps.shape == (1, 200, 400)
    # TwoSpots' regions at 1/8 … 7/8 of each side: the same fractions of the original frame (to a
    # working-frame pixel, ×4 here)
    assert torch.allclose(result.detections.boxes, spot_boxes(200, 400), atol=4 * 1.5)
    small = model.ground(torch.rand(3, 50, 80), ["a dog"])  # fits: worked on as it is
    assert recorder.seen[-1] == (80, 50) and small.image_size == (50, 80)


def test_without_a_cap_the_image_is_worked_on_at_full_size(recorder):
    WWbLModel(recorder, scoring=None, max_side=None).ground(torch.rand(3, 200, 400), "a dog")
    assert recorder.seen == [(400, 200)]


def test_an_extreme_aspect_ratio_keeps_two_rows(recorder):
    result = WWbLModel(recorder, scoring=None, max_side=64).ground(np.zeros((2, 6000, 3), np.uint8), "a dog")
    assert recorder.seen == [(64, 2)]
    assert result.image_size == (2, 6000) and result.heatmaps.shape == (1, 2, 6000)
    boxes = result.detections.boxes
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 6000).all() and (boxes[:, 3] <= 2).all()


@pytest.mark.parametrize("bad", [0, -5, 12.5, "1600", True])
def test_max_side_must_be_a_positive_whole_number(recorder, bad):
    with pytest.raises(ValueError, match="max_side"):
        WWbLModel(recorder, max_side=bad)


def _every_image_type():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    yield "rgb uint8", rgb
    yield "gray", rgb[..., 0]
    yield "rgba", np.concatenate([rgb, np.full((24, 32, 1), 255, np.uint8)], axis=-1)
    yield "float16", (rgb / 255).astype(np.float16)
    yield "uint16", rgb.astype(np.uint16) * 257
    yield "non-contiguous", rgb[:, ::-1]
    yield "bool", rgb[..., 0] > 128
    for mode in ("1", "P", "LA", "CMYK", "La"):
        yield f"PIL {mode}", Image.fromarray(rgb).convert(mode)
    yield "PIL I;16", Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    yield "tensor uint8", torch.from_numpy(rgb).permute(2, 0, 1)
    yield "tensor float64", torch.rand(3, 24, 32, dtype=torch.float64)
    yield "tensor that needs grad", torch.rand(3, 24, 32, requires_grad=True)


@pytest.mark.parametrize("name, image", list(_every_image_type()), ids=[n for n, _ in _every_image_type()])
def test_ground_takes_every_image_type(recorder, name, image):
    result = WWbLModel(recorder, scoring=None).ground(image, "a dog")
    assert isinstance(result, GroundingResult) and result.image_size == (24, 32), name


@pytest.mark.parametrize("bad, message", [
    ([[0, 1], [1, 0]], "got list"),
    (b"\x89PNG", "got bytes"),
    (np.zeros((1, 24, 32, 3), np.uint8), "H×W×3"),  # a batch of one
    (torch.zeros(1, 3, 24, 32), "C×H×W"),
    (np.array([["a", "b"], ["c", "d"]]), "unsupported image dtype"),
    (np.zeros((24, 32, 2), np.uint8), "H×W×3"),
])
def test_ground_refuses_what_is_no_image_in_one_line(recorder, bad, message):
    with pytest.raises(ImageLoadError, match=message) as caught:
        WWbLModel(recorder, scoring=None).ground(bad, "a dog")
    assert "\n" not in str(caught.value)
