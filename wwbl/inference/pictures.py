"""Pictures of a result that people can read: one colour per phrase, shared by its heat tint, its boxes
and its label, so that each region and box says which phrase it belongs to.

Labels carry a background box in the phrase's colour, stay inside the picture and are placed so that
they do not overlap each other where the image leaves room.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from wwbl.inference.results import GroundingResult

Colour = tuple[int, int, int]
Rect = tuple[float, float, float, float]

# A fixed qualitative palette (saturated, pairwise far apart; yellow last among the first eight because
# it reads worst as a thin outline on light images). Colours repeat after twelve phrases.
PALETTE: tuple[Colour, ...] = (
    (228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (23, 190, 207),
    (166, 86, 40), (255, 221, 0), (247, 129, 191), (0, 0, 128), (128, 128, 0), (0, 255, 127),
)


def phrase_colours(phrases: Sequence[str]) -> dict[str, Colour]:
    """A palette colour per distinct phrase, in order of first appearance."""
    distinct = list(dict.fromkeys(phrases))
    return {phrase: PALETTE[i % len(PALETTE)] for i, phrase in enumerate(distinct)}


# Most pixels an overlay picture has (4 MP, e.g. 2309×1732 for a 4:3 photo): large images are shown
# downscaled, and the enlargement of thin ones stops here (2×4000 → 45×89443, not 512×1024000, which
# would exceed PIL's decompression-bomb limit and be unreadable).
MAX_OVERLAY_PIXELS = 4_000_000


def display_size(size: tuple[int, int], min_side: int, max_pixels: int = MAX_OVERLAY_PIXELS) -> tuple[int, int]:
    """``(width, height)`` enlarged so that the short side has at least ``min_side`` pixels (labels need room),
    then, aspect kept, reduced to at most ``max_pixels`` pixels (up to rounding; each side at least 1)."""
    scale = max(1.0, min_side / min(size))
    cap = (max_pixels / (size[0] * size[1])) ** 0.5
    if scale <= cap:
        return (round(size[0] * scale), round(size[1] * scale)) if scale > 1 else size
    return max(1, int(size[0] * cap)), max(1, int(size[1] * cap))  # rounded down: the cap holds


def tint(base: Image.Image, heatmaps: torch.Tensor, colours: Sequence[Colour], alpha: float) -> Image.Image:
    """Each pixel blended towards the colour of its hottest phrase, by ``alpha`` times that heat."""
    if not len(heatmaps):
        return base
    maps = np.stack([np.asarray(Image.fromarray(h.clamp(0, 1).float().numpy(), mode="F").resize(base.size,
                                                                                                Image.BILINEAR))
                     for h in heatmaps]).clip(0, 1)
    strength = alpha * maps.max(axis=0)[..., None]
    colour = np.asarray(colours, dtype=np.float64)[maps.argmax(axis=0)]
    pixels = np.asarray(base, dtype=np.float64) * (1 - strength) + colour * strength
    return Image.fromarray(np.round(pixels).astype(np.uint8))


def text_colour(background: Colour) -> Colour:
    """Black on light backgrounds, white on dark ones (relative luminance, sRGB weights)."""
    luminance = 0.2126 * background[0] + 0.7152 * background[1] + 0.0722 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, max_width: float) -> str:
    """``text``, or its longest prefix that fits ``max_width`` pixels with an ellipsis. Found by bisection:
    a phrase of thousands of characters costs a dozen measurements, not one per character."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    fits, too_long = 0, len(text)  # prefix lengths: text[:too_long] + "…" is wider than the whole text
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if draw.textlength(text[:middle] + "…", font=font) <= max_width:
            fits = middle
        else:
            too_long = middle
    return text[:fits] + "…"


def _overlap(a: Rect, b: Rect) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _clamped(x: float, y: float, w: float, h: float, size: tuple[int, int]) -> Rect:
    x, y = min(max(x, 0.0), max(size[0] - w, 0.0)), min(max(y, 0.0), max(size[1] - h, 0.0))
    return (x, y, x + w, y + h)


def place_labels(label_sizes: Sequence[tuple[float, float]], boxes: Sequence[Rect], size: tuple[int, int],
                 taken: Sequence[Rect] = ()) -> list[Rect]:
    """One rectangle per label, inside the ``(width, height)`` picture, next to its box.

    Candidates, in order of preference: above the box's top-left corner, inside it, below it, and the
    same at the right edge; each is clamped into the picture. The first that overlaps no label placed
    before (nor a ``taken`` rectangle) wins, else the one overlapping least.
    """
    placed: list[Rect] = []
    for (w, h), (x1, y1, x2, y2) in zip(label_sizes, boxes):
        spots = [(x1, y1 - h), (x1, y1), (x1, y2), (x1, y2 - h), (x2 - w, y1 - h), (x2 - w, y1), (x2 - w, y2),
                 (x2 - w, y2 - h)]
        candidates = [_clamped(x, y, w, h, size) for x, y in spots]
        others = [*taken, *placed]
        placed.append(min(candidates, key=lambda rect: sum(_overlap(rect, other) for other in others)))
    return placed


def draw_detections(picture: Image.Image, boxes: Sequence[Rect], labels: Sequence[str], colours: Sequence[Colour],
                    legend: Sequence[tuple[str, Colour]] = ()) -> Image.Image:
    """Boxes outlined in their colours, then their labels on top (so no outline crosses a label).

    ``legend`` entries (phrases without a box) are stacked in the bottom-left corner (box labels prefer
    the space above boxes; viewers put their own badges at the top), which the box labels then avoid.
    """
    draw = ImageDraw.Draw(picture)
    side = min(picture.size)
    font = ImageFont.load_default(size=max(12, round(side / 32)))
    pad = max(2, round(font.size / 5))
    for box, colour in zip(boxes, colours):
        draw.rectangle(box, outline=colour, width=max(2, round(side / 170)))

    def measured(texts: Sequence[str]) -> tuple[list[str], list[tuple[int, int]]]:
        fitted = [fit_text(draw, text, font, picture.width - 2 * pad) for text in texts]
        boxes_of = [draw.textbbox((0, 0), text, font=font) for text in fitted]
        return fitted, [(r - left + 2 * pad, b - top + 2 * pad) for left, top, r, b in boxes_of]

    legend_texts, legend_sizes = measured([text for text, _ in legend])
    tops = picture.height - np.cumsum([h for _, h in legend_sizes])
    legend_rects = [(0, top, w, top + h) for (w, h), top in zip(legend_sizes, tops.tolist())]
    texts, sizes = measured(labels)
    rects = place_labels(sizes, boxes, picture.size, taken=legend_rects)
    for text, colour, (w, h), rect in zip([*legend_texts, *texts], [*(c for _, c in legend), *colours],
                                          [*legend_sizes, *sizes], [*legend_rects, *rects]):
        x0, y0 = round(rect[0]), round(rect[1])
        draw.rectangle((x0, y0, x0 + w - 1, y0 + h - 1), fill=colour)
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((x0 + pad - left, y0 + pad - top), text, fill=text_colour(colour), font=font)
    return picture


def overlay(image: Image.Image, result: GroundingResult, alpha: float = 0.45, min_side: int = 512,
            only: int | None = None) -> Image.Image:
    """The image with each phrase's heat tinted and its boxes labelled in the phrase's colour.

    Small images are enlarged (nearest neighbour, display only) so that at least ``min_side`` pixels
    are available for readable labels, and no picture exceeds `MAX_OVERLAY_PIXELS` (larger images are
    shown downscaled); boxes are scaled with them. ``image`` may be a copy of the result's image at
    another size (the same aspect), e.g. one already downscaled for display. A phrase without a box is named in
    the bottom-left corner. ``only=k`` shows phrase ``k`` alone.
    """
    colour_of = phrase_colours(result.phrases)
    keep = range(len(result.phrases)) if only is None else [only]
    shown = {result.phrases[k] for k in keep}
    base = image.convert("RGB")
    size = display_size(base.size, min_side)
    height, width = result.image_size  # the boxes' frame; ``image`` may be a downscaled copy of it
    scale_x, scale_y = size[0] / width, size[1] / height
    if size != base.size:
        enlarging = size[0] * size[1] > base.width * base.height
        base = base.resize(size, Image.NEAREST if enlarging else Image.BILINEAR, reducing_gap=None if enlarging else 3.0)
    picture = tint(base, result.heatmaps[list(keep)], [colour_of[result.phrases[k]] for k in keep], alpha)
    phrases = result.detections.phrases or [""] * len(result.detections)
    boxes, labels, colours = [], [], []
    for box, score, phrase in zip(result.detections.boxes.tolist(), result.detections.scores.tolist(), phrases):
        if only is not None and phrase not in shown:
            continue
        boxes.append((box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y))
        labels.append(f"{phrase} {score:.2f}".strip())
        colours.append(colour_of.get(phrase, PALETTE[0]))
    boxed = set(phrases)
    legend = [(phrase, colour_of[phrase]) for phrase in dict.fromkeys(result.phrases[k] for k in keep)
              if phrase not in boxed]
    return draw_detections(picture, boxes, labels, colours, legend)


def heatmap_png_name(stem: str, k: int) -> str:
    """File of phrase ``k``'s picture: numbered, not named by the phrase, so any phrase text is safe and
    no two images' files can collide (``_heatmap_<digits>`` cannot end any other output name)."""
    return f"{stem}_heatmap_{k}.png"
