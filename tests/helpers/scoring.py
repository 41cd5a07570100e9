"""A stand-in CLIP and fixed raw maps for detection-confidence tests (hand-computable cosines and heat)."""
import torch

from wwbl.extractors.base import HeatmapExtractor

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class MeanColourClip:
    """A stand-in CLIP whose image embedding is the L2-normalised mean RGB of its 16×16 input and whose
    text embedding of a colour name is that colour: the cosine says how much of the box is that colour.
    Its ``prepare`` resizes by nearest neighbour (colours stay pure) and does not normalise, so its
    blank (the mean colour, 0 after normalisation) is black."""

    image_size = 16
    device = torch.device("cpu")

    def prepare(self, images01):
        return torch.nn.functional.interpolate(images01, size=(16, 16), mode="nearest")

    def encode_image_prepared(self, x):
        assert x.shape[-2:] == (16, 16)  # views arrive at CLIP's input size
        return torch.nn.functional.normalize(x.mean(dim=(-2, -1)), dim=-1)

    def encode_image(self, images01):
        return self.encode_image_prepared(self.prepare(images01))

    def encode_text(self, phrases):
        return torch.tensor([next(COLOURS[w] for w in p.split() if w in COLOURS) for p in phrases])


class FixedRawMaps(HeatmapExtractor):
    """Per phrase a fixed raw S×S map (absolute like g's sigmoid when ``absolute``)."""

    def __init__(self, raw: dict[str, torch.Tensor], absolute: bool = True):
        super().__init__(MeanColourClip(), input_size=next(iter(raw.values())).shape[-1])
        self.raw, self.absolute_maps = raw, absolute

    def _heatmaps_square(self, images, text_emb, image_index, phrases):
        return torch.stack([self.raw[p] for p in phrases])


def red_left_blue_right(h: int = 8, w: int = 8) -> torch.Tensor:
    image = torch.zeros(3, h, w)
    image[0, :, : w // 2] = 1.0
    image[2, :, w // 2:] = 1.0
    return image


def block(value: float, side: int = 8) -> torch.Tensor:
    """Zero everywhere but ``value`` on the left half's middle rows (rows 2..5, columns 0..3)."""
    raw = torch.zeros(side, side)
    raw[2:6, : side // 2] = value
    return raw
