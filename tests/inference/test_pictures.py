"""Overlays and per-phrase pictures: one colour per phrase for heat, boxes and label; labels inside the
picture and apart; one readable PNG per phrase, named in the JSON."""
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from wwbl.boxes import Detections
from wwbl.inference.outputs import write_image_outputs
from wwbl.inference.pictures import (
    MAX_OVERLAY_PIXELS,
    PALETTE,
    display_size,
    fit_text,
    overlay,
    phrase_colours,
    place_labels,
    text_colour,
)
from wwbl.inference.results import GroundingResult

GRAY = 100
ALPHA = 0.45


def gray_image(width, height):
    return Image.new("RGB", (width, height), (GRAY, GRAY, GRAY))


def two_phrase_result():
    """64×64 image: phrase "a" hot in [8, 24)², phrase "b" in [40, 56)², one box around each."""
    heat = torch.zeros(2, 64, 64)
    heat[0, 8:24, 8:24] = 1
    heat[1, 40:56, 40:56] = 1
    detections = Detections(torch.tensor([[8.0, 8, 24, 24], [40, 40, 56, 56]]), torch.tensor([0.9, 0.8]), ["a", "b"])
    return GroundingResult((64, 64), ["a", "b"], heat, detections)


def exact(picture, colour):
    return np.all(np.asarray(picture) == np.asarray(colour, dtype=np.uint8), axis=-1)


def test_palette_colours_are_far_apart_and_assigned_per_distinct_phrase():
    for a, b in itertools.combinations(PALETTE, 2):
        assert np.linalg.norm(np.subtract(a, b)) > 60, (a, b)
    colours = phrase_colours(["a dog", "a cat", "a dog", "a ball"])
    assert list(colours) == ["a dog", "a cat", "a ball"]
    assert list(colours.values()) == list(PALETTE[:3])


def test_heat_boxes_and_labels_share_the_phrase_colour():
    result = two_phrase_result()
    picture = overlay(gray_image(64, 64), result, alpha=ALPHA)
    assert picture.size == (512, 512)  # enlarged ×8 for display
    pixels = np.asarray(picture).astype(int)
    colour_a, colour_b = PALETTE[0], PALETTE[1]
    for colour, (cx, cy) in [(colour_a, (128, 128)), (colour_b, (384, 384))]:
        # inside the hot region, away from outline and label: gray blended towards the phrase colour
        expected = [round(GRAY * (1 - ALPHA) + c * ALPHA) for c in colour]
        assert pixels[cy, cx].tolist() == pytest.approx(expected, abs=1)
    assert pixels[300, 200].tolist() == [GRAY] * 3  # cold pixels keep the image
    # the outlines: box a spans 64..192 in the display frame, box b 320..448
    assert pixels[128, 65].tolist() == list(colour_a) and pixels[384, 321].tolist() == list(colour_b)
    # labels: solid patches of the phrase colour just above each box, none of the other phrase's colour
    above_a, above_b = exact(picture, colour_a)[30:63, 66:190], exact(picture, colour_b)[286:319, 322:446]
    assert above_a.sum() > 400 and above_b.sum() > 400
    assert not exact(picture, colour_b)[30:63, 66:190].any() and not exact(picture, colour_a)[286:319, 322:446].any()


def test_overlapping_heat_takes_the_colour_of_the_hotter_phrase():
    heat = torch.zeros(2, 100, 100)
    heat[0, :, :50], heat[1, :, :50] = 0.9, 0.3   # left half: phrase 0 hotter
    heat[0, :, 50:], heat[1, :, 50:] = 0.2, 1.0   # right half: phrase 1 hotter
    result = GroundingResult((100, 100), ["x", "y"], heat, Detections.empty())
    pixels = np.asarray(overlay(Image.new("RGB", (100, 100)), result, alpha=1.0, min_side=100)).astype(int)
    assert pixels[10, 10].tolist() == [round(0.9 * c) for c in PALETTE[0]]  # above the corner legend
    assert pixels[10, 90].tolist() == [round(1.0 * c) for c in PALETTE[1]]
    legend = exact(Image.fromarray(pixels.astype(np.uint8)), PALETTE[0])[60:, :]  # "x" has no box: named there
    assert legend.sum() > 50


SIZE = (300, 200)
CORNER_BOXES = {
    "top-left": (0, 0, 40, 30), "top": (130, 0, 170, 30), "top-right": (260, 0, 300, 30),
    "left": (0, 85, 40, 115), "right": (260, 85, 300, 115), "bottom-left": (0, 170, 40, 200),
    "bottom": (130, 170, 170, 200), "bottom-right": (260, 170, 300, 200), "whole": (0, 0, 300, 200),
}


@pytest.mark.parametrize("where", list(CORNER_BOXES))
def test_label_rectangles_stay_inside_at_every_border(where):
    (x0, y0, x1, y1), = place_labels([(120, 20)], [CORNER_BOXES[where]], SIZE)
    assert 0 <= x0 and 0 <= y0 and x1 <= SIZE[0] and y1 <= SIZE[1]
    assert (x1 - x0, y1 - y0) == (120, 20)


def test_labels_of_coinciding_boxes_do_not_overlap():
    box = (100, 60, 200, 140)
    rects = place_labels([(90, 20)] * 4, [box] * 4, SIZE, taken=[(0, 0, 300, 10)])
    for a, b in itertools.combinations(rects, 2):
        assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    assert all(rect[1] >= 10 for rect in rects)  # the taken strip is avoided


def white_text_pixels(box, phrase="a rather long phrase", size=(512, 400)):
    result = GroundingResult((size[1], size[0]), [phrase], torch.zeros(1, size[1], size[0]),
                             Detections(torch.tensor([box], dtype=torch.float32), torch.tensor([0.5]), [phrase]))
    assert text_colour(PALETTE[0]) == (255, 255, 255)
    return int(exact(overlay(gray_image(*size), result), (255, 255, 255)).sum())


def test_rendered_labels_are_whole_at_every_border_and_corner():
    """The label's text is drawn unclipped: as many white text pixels as for a box in the middle."""
    reference = white_text_pixels((200, 150, 300, 250))
    assert reference > 50
    for box in [(0, 0, 30, 30), (482, 0, 512, 30), (0, 370, 30, 400), (482, 370, 512, 400), (0, 0, 512, 400),
                (240, 0, 270, 30), (240, 370, 270, 400), (0, 180, 30, 210), (482, 180, 512, 210)]:
        assert white_text_pixels(box) == reference, box


def test_too_long_labels_are_shortened_to_the_width():
    picture = Image.new("RGB", (100, 40))
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default(size=14)
    text = fit_text(draw, "an extraordinarily long phrase for so small a picture", font, 90)
    assert text.endswith("…") and draw.textlength(text, font=font) <= 90
    assert fit_text(draw, "short", font, 90) == "short"


def test_a_label_of_thousands_of_characters_is_cut_to_the_longest_prefix_that_fits():
    picture = Image.new("RGB", (512, 40))
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default(size=16)
    text = " ".join(f"word{k}" for k in range(800))  # ~6,000 characters: one measurement each would take minutes
    fitted = fit_text(draw, text, font, 500)
    prefix = fitted[:-1]
    assert fitted.endswith("…") and text.startswith(prefix) and draw.textlength(fitted, font=font) <= 500
    assert draw.textlength(text[:len(prefix) + 1] + "…", font=font) > 500  # one more character would not fit


@pytest.mark.parametrize("width, height", [(64, 64), (70, 40), (640, 520)])
def test_one_png_per_phrase_of_the_display_size_named_in_the_json(tmp_path, width, height):
    heat = torch.zeros(3, height, width)
    heat[0, : height // 2] = 1
    heat[1, height // 2:] = 1
    heat[2, :, : width // 2] = 1   # the same phrase text as phrase 0: same colour, its own file
    phrases = ["a dog", "a cat/dog?", "a dog"]
    detections = Detections(torch.tensor([[1.0, 1, width / 2, height / 2]]), torch.tensor([0.7]), ["a cat/dog?"])
    result = GroundingResult((height, width), phrases, heat, detections)
    write_image_outputs(tmp_path, "scene", gray_image(width, height), result, "scene.png")
    record = json.loads((tmp_path / "scene.json").read_text())
    names = [f"scene_heatmap_{k}.png" for k in range(3)]
    assert record["heatmap_images"] == [{"phrase": p, "file": n} for p, n in zip(phrases, names)]
    scale = max(1.0, 512 / min(width, height))
    expected = (round(width * scale), round(height * scale))
    with Image.open(tmp_path / "scene_overlay.png") as picture:
        assert picture.size == expected
    for k, name in enumerate(names):
        with Image.open(tmp_path / name) as picture:
            picture.load()
        assert picture.size == expected and picture.mode == "RGB"
        pixels = np.asarray(picture).astype(int)
        top_left, top_right, bottom_right = (2, 2), (expected[0] - 3, 2), (expected[0] - 3, expected[1] - 3)
        # (corners clear of labels: phrase 1's box label is top-left, the legend of box-less "a dog" bottom-left)
        hot, cold = [(top_right, bottom_right), (bottom_right, top_right), (top_left, top_right)][k]
        colour = PALETTE[0] if phrases[k] == "a dog" else PALETTE[1]
        assert pixels[hot[1], hot[0]].tolist() == pytest.approx([GRAY * 0.55 + c * 0.45 for c in colour], abs=1)
        assert pixels[cold[1], cold[0]].tolist() == [GRAY] * 3   # other phrases' heat is not shown


@pytest.mark.parametrize("size", [(2, 4000), (16, 16000), (12000, 9000), (100_000, 2)])
def test_no_overlay_exceeds_the_pixel_cap(size):
    width, height = display_size(size, 512)
    assert width * height <= MAX_OVERLAY_PIXELS and width >= 1 and height >= 1
    # the aspect ratio is kept to a pixel
    assert abs(width * size[1] - height * size[0]) <= max(size)
    assert width * height <= Image.MAX_IMAGE_PIXELS  # PIL reads it back without a bomb warning


def test_display_size_by_hand():
    assert display_size((2, 4000), 512) == (44, 89442)  # enlarged ×sqrt(4e6 / 8000) = ×22.36, rounded down
    assert display_size((12000, 9000), 512) == (2309, 1732)  # shown at ×0.19245
    assert display_size((64, 32), 512) == (1024, 512)  # small ones are only enlarged


def test_a_thin_overlay_is_written_readable_and_boxes_follow_the_frame(tmp_path):
    heat = torch.zeros(1, 4000, 2)
    heat[0, :2000] = 1
    detections = Detections(torch.tensor([[0.0, 0, 2, 2000]]), torch.tensor([0.8]), ["a pole"])
    result = GroundingResult((4000, 2), ["a pole"], heat, detections)
    write_image_outputs(tmp_path, "pole", gray_image(2, 4000), result, "pole.png")
    with Image.open(tmp_path / "pole_overlay.png") as picture:
        picture.load()
        assert picture.size == display_size((2, 4000), 512)
        assert picture.size[0] * picture.size[1] <= MAX_OVERLAY_PIXELS


def test_an_overlay_drawn_on_a_downscaled_copy_puts_boxes_in_the_same_place():
    heat = torch.zeros(1, 400, 600)
    detections = Detections(torch.tensor([[300.0, 200, 600, 400]]), torch.tensor([0.5]), ["x"])
    result = GroundingResult((400, 600), ["x"], heat, detections)
    full = np.asarray(overlay(gray_image(600, 400), result, min_side=1))
    half = np.asarray(overlay(gray_image(300, 200), result, min_side=1))  # the same image at half size
    assert full.shape == (400, 600, 3) and half.shape == (200, 300, 3)
    outline = PALETTE[0]
    # the box's left edge: column 300 of the full picture, column 150 of the half one
    assert full[300, 300].tolist() == list(outline) and half[150, 150].tolist() == list(outline)
