"""Crop & Rank, the CLIP baseline of Adapting CLIP (Li et al. 2022, Sec. 5; reference `models/ss_baseline.py`).

Selective search proposes boxes; the top ``num_proposals`` (the paper: 200; the reference code: 100)
are cropped, each resized to CLIP's input square (aspect ignored), embedded, and ranked by cosine
similarity with the phrase. The best box is the prediction (`detect`); as a heatmap, the best
``heatmap_boxes`` boxes are painted with CLIP's relative probability ``exp(logit_scale*(s - s_best))``
(the best box = 1, max over overlapping boxes).

Selective search is OpenCV-contrib's single strategy with the reference's Felzenszwalb parameters
(k = ``ss_scale`` 500, sigma 0.9; OpenCV exposes no ``min_size``), run on uint8 RGB. Proposals and
crops are taken in the base class's square working frame of side ``input_size`` (default: CLIP's
input size), where a crop resized to a square equals the reference's crop of the original resized
to a square up to resampling; boxes are scaled back to each original image. Crops of all proposals of
all images are cut and resized in one `roi_align` call and embedded in batches of ``crop_batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

from wwbl.boxes import Detections
from wwbl.clip import FrozenCLIP
from wwbl.extractors.base import HeatmapExtractor, ImageInput, register_extractor
from wwbl.images import as_tensor01, resize_square


def selective_search_boxes(image01: Tensor, max_boxes: int, scale: float = 500.0, sigma: float = 0.9) -> Tensor:
    """Top ``max_boxes`` distinct selective-search boxes of a ``3×H×W`` [0,1] image, xyxy pixel edges, ranked.

    An image without any proposal gets the whole-image box, so every phrase has an answer.
    """
    try:
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    except AttributeError as error:
        raise ImportError("Crop & Rank needs OpenCV's contrib module (opencv-contrib-python-headless)") from error
    rgb = (image01.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    search.setBaseImage(np.ascontiguousarray(rgb))
    search.switchToSingleStrategy(int(scale), float(sigma))
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    rects = rects[(rects[:, 2] > 0) & (rects[:, 3] > 0)]
    _, first = np.unique(rects, axis=0, return_index=True)
    rects = rects[np.sort(first)][:max_boxes]
    if not len(rects):
        rects = np.array([[0, 0, rgb.shape[1], rgb.shape[0]]], dtype=np.float32)
    boxes = torch.from_numpy(rects)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


@register_extractor("crop_and_rank")
class CropAndRankExtractor(HeatmapExtractor):
    """Selective-search proposals ranked by CLIP (see the module docstring for the options)."""

    def __init__(
        self,
        clip: FrozenCLIP,
        num_proposals: int = 200,
        ss_scale: float = 500.0,
        ss_sigma: float = 0.9,
        heatmap_boxes: int = 1,
        crop_batch_size: int = 256,
        **base_options,
    ):
        super().__init__(clip, **base_options)
        if num_proposals < 1 or heatmap_boxes < 1 or crop_batch_size < 1:
            raise ValueError("num_proposals, heatmap_boxes and crop_batch_size must be >= 1")
        self.num_proposals, self.ss_scale, self.ss_sigma = num_proposals, ss_scale, ss_sigma
        self.heatmap_boxes, self.crop_batch_size = heatmap_boxes, crop_batch_size

    def prepare_images(self, square01: Tensor) -> Tensor:
        """Selective search and cropping need the [0,1] square images; CLIP normalises each crop."""
        return square01

    @torch.no_grad()
    def rank(self, images01: Tensor, text_emb: Tensor, image_index: Tensor) -> tuple[Tensor, Tensor]:
        """Proposals of each phrase's image and their cosine scores, best first.

        Returns ``boxes P×K×4`` (square-frame xyxy) and ``scores P×K`` (-inf where an image has
        fewer than K proposals).
        """
        used, image_index = image_index.unique(return_inverse=True)  # images without phrases cost nothing
        images01 = images01[used]
        proposals = [
            selective_search_boxes(img, self.num_proposals, self.ss_scale, self.ss_sigma).to(images01.device)
            for img in images01
        ]
        embeddings = self._crop_embeddings(images01, proposals)
        most = max(len(p) for p in proposals)
        padded_boxes = images01.new_zeros(len(proposals), most, 4)
        padded_emb = embeddings.new_zeros(len(proposals), most, embeddings.shape[-1])
        valid = torch.zeros(len(proposals), most, dtype=torch.bool, device=images01.device)
        for i, (boxes, emb) in enumerate(zip(proposals, embeddings.split([len(p) for p in proposals]))):
            padded_boxes[i, : len(boxes)], padded_emb[i, : len(boxes)], valid[i, : len(boxes)] = boxes, emb, True
        scores = torch.einsum("pkd,pd->pk", padded_emb[image_index], text_emb.float())
        scores = scores.masked_fill(~valid[image_index], -float("inf"))
        order = scores.argsort(dim=1, descending=True)
        return padded_boxes[image_index].gather(1, order[..., None].expand(-1, -1, 4)), scores.gather(1, order)

    def _crop_embeddings(self, images01: Tensor, proposals: list[Tensor]) -> Tensor:
        rois = torch.cat([torch.nn.functional.pad(p, (1, 0), value=float(i)) for i, p in enumerate(proposals)])
        mean = torch.tensor(self.clip.mean, device=images01.device).view(1, 3, 1, 1)
        std = torch.tensor(self.clip.std, device=images01.device).view(1, 3, 1, 1)
        out = []
        for start in range(0, len(rois), self.crop_batch_size):
            crops = roi_align(
                images01.float(),
                rois[start : start + self.crop_batch_size],
                output_size=self.clip.image_size,
                sampling_ratio=-1,
                aligned=True,
            )
            out.append(self.clip.encode_image_prepared((crops - mean) / std))
        return torch.cat(out)

    def _heatmaps_square(self, images: Tensor, text_emb: Tensor, image_index: Tensor, phrases: list[str]) -> Tensor:
        boxes, scores = self.rank(images, text_emb, image_index)
        boxes, scores = boxes[:, : self.heatmap_boxes], scores[:, : self.heatmap_boxes]
        weights = torch.exp(self.clip.logit_scale * (scores - scores[:, :1])).nan_to_num(0.0)
        # a pixel belongs to a box when its centre does
        centres_x = torch.arange(images.shape[-1], device=images.device) + 0.5
        centres_y = torch.arange(images.shape[-2], device=images.device) + 0.5
        inside_x = (centres_x >= boxes[..., 0:1]) & (centres_x < boxes[..., 2:3])
        inside_y = (centres_y >= boxes[..., 1:2]) & (centres_y < boxes[..., 3:4])
        painted = inside_y[..., :, None] & inside_x[..., None, :]
        return (painted * weights[..., None, None]).amax(dim=1)

    def detect(self, images: Sequence[ImageInput], phrases: Sequence[Sequence[str]]) -> list[Detections]:
        """The best proposal of each phrase (score = cosine similarity), xyxy in the original frame."""
        if len(images) != len(phrases):
            raise ValueError(f"{len(images)} images but {len(phrases)} phrase lists")
        detections = []
        for start in range(0, len(images), self.images_per_batch):
            tensors = [as_tensor01(img) for img in images[start : start + self.images_per_batch]]
            names = [list(p) for p in phrases[start : start + self.images_per_batch]]
            detections.extend(self._chunk_detect(tensors, names))
        return detections

    def _chunk_detect(self, images: list[Tensor], phrases: list[list[str]]) -> list[Detections]:
        counts = [len(p) for p in phrases]
        flat = [p for per_image in phrases for p in per_image]
        if not flat:
            return [Detections.empty() for _ in images]
        square = resize_square(images, self.input_size).to(self.device)
        image_index = torch.repeat_interleave(torch.arange(len(images)), torch.tensor(counts)).to(self.device)
        boxes, scores = self.rank(square, self.encode_phrases(flat), image_index)
        out = []
        for image, best_box, best_score, names in zip(
            images, boxes[:, 0].cpu().split(counts), scores[:, 0].cpu().split(counts), phrases
        ):
            height, width = image.shape[-2:]
            scale = torch.tensor([width, height, width, height]) / self.input_size
            out.append(Detections(best_box * scale, best_score, names) if names else Detections.empty())
        return out
