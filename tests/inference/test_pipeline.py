"""End-to-end WSG / WWbL / iterative WWbL with tiny random models on generated images."""
import numpy as np
import pytest
import torch
from tests.helpers.tiny_blip import save_tiny_blip
from PIL import Image

from wwbl.box_rules import BoxRule
from wwbl.extractors.base import HeatmapExtractor
from wwbl.inference import GroundingPipeline, IterativeWWbL, WWbLPipeline, load
from wwbl.inference.captioner import BlipCaptioner, CaptionSettings
from wwbl.inference.options import WWbLOptions
from wwbl.inference.proposals import ProposalGenerator


class TwoSpots(HeatmapExtractor):
    """Every phrase lights the same two square-frame regions: A (1.0) at rows S/8..3S/8, cols S/2..7S/8,
    and B (0.7) at rows 5S/8..7S/8, cols S/8..3S/8 -> in an H×W image, A ≈ (W/2, H/8, 7W/8, 3H/8)."""

    def _heatmaps_square(self, images, text_emb, image_index, phrases):
        s = self.input_size
        maps = torch.zeros(len(phrases), s, s)
        maps[:, s // 8: 3 * s // 8, s // 2: 7 * s // 8] = 1.0
        maps[:, 5 * s // 8: 7 * s // 8, s // 8: 3 * s // 8] = 0.7
        return maps


def spot_boxes(h, w):
    return torch.tensor([[w / 2, h / 8, 7 * w / 8, 3 * h / 8], [w / 8, 5 * h / 8, 3 * w / 8, 7 * h / 8]])


@pytest.fixture(scope="module")
def spots(tiny_clip):
    return TwoSpots(tiny_clip, input_size=64)


@pytest.fixture(scope="module")
def g_extractor(tiny_clip):
    from wwbl.extractors.network_g import NetworkGExtractor
    from wwbl.networks import GroundingNet

    torch.manual_seed(0)
    net = GroundingNet(text_dim=tiny_clip.embed_dim, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False)
    return NetworkGExtractor(tiny_clip, net, input_size=64)


@pytest.fixture(scope="module")
def dog_captioner(tmp_path_factory):
    path = save_tiny_blip(tmp_path_factory.mktemp("blip_dog"), favourite_word="dog")
    return BlipCaptioner.from_pretrained(str(path), settings=CaptionSettings(max_length=8))


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """Non-square RGB array, grayscale, RGBA, an EXIF-rotated JPEG path, and a [0,1] tensor."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    gray = Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8), mode="L")
    rgba = Image.fromarray(rng.integers(0, 255, (50, 30, 4), dtype=np.uint8), mode="RGBA")
    path = tmp_path_factory.mktemp("exif") / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 wide × 36 high, displayed rotated by 90°: 36 wide × 60 high
    Image.fromarray(rng.integers(0, 255, (36, 60, 3), dtype=np.uint8)).save(path, exif=exif)
    tensor = torch.rand(3, 33, 57)
    sizes = [(48, 80), (40, 40), (50, 30), (60, 36), (33, 57)]
    return [rgb, gray, rgba, str(path), tensor], sizes


def assert_inside(result):
    h, w = result.image_size
    boxes = result.detections.boxes
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_grounding_with_g_on_odd_images(g_extractor, odd_images):
    images, sizes = odd_images
    results = GroundingPipeline(g_extractor)(images, [["a dog", "the red ball"]] * len(images))
    for result, size in zip(results, sizes):
        assert result.image_size == size
        assert result.heatmaps.shape == (2, *size)
        assert 0 <= result.heatmaps.min() and result.heatmaps.max() <= 1
        assert set(result.detections.phrases) <= {"a dog", "the red ball"}
        assert len(result.detections) >= 1   # min-max normalised maps always exceed 0.5 somewhere
        assert_inside(result)


@pytest.mark.parametrize("size", [(40, 100), (90, 30)])
def test_grounding_boxes_land_in_the_original_frame(spots, size):
    image = torch.rand(3, *size)
    result = GroundingPipeline(spots)([image], [["left", "right"]])[0]
    expected = spot_boxes(*size)
    assert result.boxes_for("left").boxes.shape == (2, 4)
    assert torch.allclose(result.boxes_for("right").boxes, expected, atol=1.5)
    assert result.boxes_for("left").rule_scores.tolist() == pytest.approx([1.0, 0.7], abs=0.05)


def test_grounding_rejects_empty_phrases(spots):
    with pytest.raises(ValueError, match="non-empty"):
        GroundingPipeline(spots)([torch.rand(3, 20, 20)], [["a dog", "  "]])


def test_wwbl_algorithm_1_end_to_end(g_extractor, dog_captioner, odd_images):
    images, sizes = odd_images
    pipeline = WWbLPipeline(g_extractor, dog_captioner, proposals=ProposalGenerator(max_proposals=6))
    results = pipeline(images)
    for result, size in zip(results, sizes):
        assert result.image_size == size
        assert len(result.captions) == len(result.proposals) == 6
        # every crop gets the same caption, so the cosine is 1 everywhere: one cluster of all six
        assert len(set(result.captions)) == 1 and result.captions[0].startswith("dog")
        assert result.clusters == [list(range(6))]
        assert result.phrases == [result.captions[0]]
        assert result.heatmaps.shape == (1, *size)
        assert set(result.detections.phrases) == {result.captions[0]}
        assert_inside(result)


def test_wwbl_uses_the_heatmap_source_for_the_boxes(spots, dog_captioner):
    pipeline = WWbLPipeline(spots, dog_captioner, proposals=ProposalGenerator(selective_search=False))
    result = pipeline([torch.rand(3, 56, 120)])[0]
    assert len(result.proposals) == 13 and len(result.phrases) == 1
    assert torch.allclose(result.detections.boxes, spot_boxes(56, 120), atol=1.5)


def test_wwbl_without_clusters_returns_no_phrases(spots, dog_captioner):
    pipeline = WWbLPipeline(spots, dog_captioner, proposals=ProposalGenerator(selective_search=False),
                            min_cluster_size=14)  # 13 proposals can never form a community of 14
    result = pipeline([torch.rand(3, 30, 30)])[0]
    assert result.phrases == [] and len(result.detections) == 0 and result.heatmaps.shape == (0, 30, 30)


def test_iterative_variant_finds_one_region_at_a_time(spots, dog_captioner):
    rule = BoxRule(mode="paper")
    iterative = IterativeWWbL(spots, dog_captioner, boxes=rule, always_keep=0, max_iterations=5)
    results = iterative([torch.rand(3, 64, 96), torch.rand(3, 40, 40)])
    for result in results:
        h, w = result.image_size
        # step 1 takes spot A; step 2 sees A zeroed and takes B; step 3 finds nothing and stops
        assert torch.allclose(result.detections.boxes, spot_boxes(h, w), atol=1.5)
        assert result.confidences.tolist() == pytest.approx([1.0, 1.0], abs=1e-4)  # identical captions
        a = result.detections.boxes[0].round().long().tolist()
        assert result.heatmaps[1, a[1]:a[3], a[0]:a[2]].max() == 0
        assert result.crop_captions == result.phrases


def test_iterative_stops_on_low_agreement(spots, dog_captioner):
    iterative = IterativeWWbL(spots, dog_captioner, boxes=BoxRule(mode="paper"), always_keep=1, stop_threshold=1.5)
    result = iterative([torch.rand(3, 50, 50)])[0]
    assert len(result.detections) == 1  # the first step is always kept, the second fails conf > 1.5


def test_facade_ground_and_detect(tmp_path, tiny_clip, dog_captioner):
    from wwbl.export import export_grounding_net
    from wwbl.networks import GroundingNet

    net = GroundingNet(text_dim=tiny_clip.embed_dim, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False)
    export_grounding_net(net, str(tmp_path / "g"), {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None},
                         extra={"input_size": 64, "text_prefix": ""})
    options = WWbLOptions(proposals=ProposalGenerator(max_proposals=4))
    model = load(tmp_path / "g", captioner=dog_captioner, options=options)
    image = Image.fromarray(np.zeros((30, 50, 3), np.uint8))
    grounded = model.ground(image, "a dog")
    assert grounded.phrases == ["a dog"] and grounded.heatmaps.shape == (1, 30, 50)
    detected = model.detect(image)
    assert detected.image_size == (30, 50) and len(detected.proposals) == 4
    with pytest.raises(ValueError, match="checkpoint"):
        load(None, method="g")


def test_facade_with_a_training_free_method(tiny_clip):
    model = load(method="gae", clip=tiny_clip)
    result = model.ground(torch.rand(3, 40, 24), ["a dog", "a cat"])
    assert result.heatmaps.shape == (2, 40, 24)
    assert_inside(result)
