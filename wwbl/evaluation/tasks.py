"""The four evaluation tasks: per batch of images, compact JSON records; from records, the metrics.

A record holds everything the metrics need for one image (argmax points, boxes, matches, class
ranks, or the per-image mask-metric states), so a resumed run scores cached and new images alike
without recomputing heatmaps. Records are plain JSON (see ``evaluate.RecordCache``).

* ``wsg`` — per GT item: heatmaps of its phrases averaged (the reference's Flickr protocol),
  pointing game, box accuracy (union rule, ``IoU >= 0.5``) and Acc@thr (best box, ``IoU > thr``).
  ``entity_average``: ``"normalised"`` (default) min-max normalises each phrase map before the
  average; ``"raw"`` averages the maps in the method's own scale and normalises the mean (the
  released code). ``box_resolution``: ``"original"`` (default) cuts boxes from the map resized
  to the original image; ``"model"`` cuts them at the method's square input side S and scales
  them to the image (the released code, S = g's size). Pointing always uses the map at the
  original resolution, as the released code.
* ``wwbl`` — per image: the WWbL pipeline's (or a predictions file's) captions, their heatmap
  argmax points and boxes; per GT item the nearest caption in CLIP text space (WWbL metric).
* ``wsol`` — per image: heatmap of the class prompt (averaged over the class's names), its boxes,
  the top-5 zero-shot classes (when classification is on). Maps and boxes live in the original
  image frame; the WWbL reference instead resized to 256, centre-cropped 224 and mapped the GT
  boxes into the crop (a documented deviation: nothing of the image is cropped away here).
* ``masks`` — per image: heatmap of the label prompt, optionally closed (the poster), mean-IoU
  curve and PxAP histograms against the GT mask.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import Tensor

from wwbl.boxes import Detections
from wwbl.clip import minmax_normalize
from wwbl.defaults import POINTING_TIES
from wwbl.extractors.postprocess import close_map
from wwbl.images import resize_heatmap, to_tensor01
from wwbl.inference.scoring import Scoring, box_heat, box_similarity, confidence
from wwbl.metrics import (
    AccAtIoU,
    BoxAccuracy,
    GTKnownLoc,
    MeanIoUSweep,
    PointingAccuracy,
    PxAP,
    TopKLoc,
    WWbLMetric,
    argmax_points,
    nearest_captions,
)
from wwbl.readers import GroundingSample, MaskSample, WSOLSample, load_mask

ENTITY_AVERAGES = ("normalised", "raw")
BOX_RESOLUTIONS = ("original", "model")


@dataclass
class Unit:
    """One image to process: its cache key, path and the GT samples on it."""

    key: str
    image_path: Any
    samples: list[Any]


def group_by_image(samples: Sequence[Any]) -> list[Unit]:
    """Units in first-appearance order; grounding items of one image share one unit."""
    units: dict[str, Unit] = {}
    for sample in samples:
        key = str(sample.image_id)
        if key not in units:
            units[key] = Unit(key, sample.image_path, [])
        units[key].samples.append(sample)
    return list(units.values())


def _boxes_json(dets: Detections) -> dict[str, list]:
    return {"boxes": [[round(float(v), 3) for v in box] for box in dets.boxes.tolist()],
            "scores": [round(float(s), 6) for s in dets.scores.tolist()]}


def _boxes_of(entry: dict) -> Tensor:
    return torch.tensor(entry["boxes"], dtype=torch.float32).reshape(-1, 4)


BoxFn = Callable[[Tensor], Detections]


def detections_for(extractor: Any, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]) -> list[list[Detections]]:
    """The method's own boxes (``extractor.detect``), split per phrase of each image."""
    per_image = extractor.detect(list(images), [list(p) for p in phrases])
    out = []
    for dets, names in zip(per_image, phrases):
        labels = dets.phrases or []
        owned = [[i for i, label in enumerate(labels) if label == name] for name in names]
        out.append([Detections(dets.boxes[idx], dets.scores[idx], [name]) for idx, name in zip(owned, names)])
    return out


# ----------------------------------------------------------------------------- WSG


def _heatmaps_once_per_phrase(extractor: Any, images: Sequence[Image.Image],
                              phrase_lists: list[list[str]], **options: bool) -> list[Tensor]:
    """``extractor.heatmaps`` with each distinct phrase of an image computed once (items of one image
    often share phrases, e.g. "a man"), expanded back to one map per entry of ``phrase_lists``."""
    return _maps_once_per_phrase(extractor.heatmaps, images, phrase_lists, **options)


def _maps_once_per_phrase(compute: Callable, images: Sequence[Image.Image], phrase_lists: list[list[str]],
                          **options: bool) -> Any:
    """``compute(images, distinct phrases)`` (per image tensors, or a tuple of such lists), each row
    expanded back to one per entry of ``phrase_lists``."""
    positions = [{p: i for i, p in enumerate(dict.fromkeys(phrases))} for phrases in phrase_lists]
    out = compute(list(images), [list(position) for position in positions], **options)

    def expand(per_image: list[Tensor]) -> list[Tensor]:
        return [m[[position[p] for p in phrases]] for m, position, phrases in zip(per_image, positions, phrase_lists)]

    return tuple(expand(part) for part in out) if isinstance(out, tuple) else expand(out)


class GroundingTask:
    """WSG on a grounding benchmark (WWbL Tables 6–7, Adapting-CLIP Table 1).

    ``scoring`` (off by default, so benchmark numbers stay the papers' protocol) scores each item's
    boxes by detection confidence (:mod:`wwbl.inference.scoring`: the CLIP term with the item's first
    phrase; the raw heat averaged over its phrases' maps, as its map is) and keeps them by it.
    """

    def __init__(self, extractor: Any, box_fn: BoxFn | None, gt_mode: str = "union", iou_threshold: float = 0.5,
                 acc_threshold: float = 0.5, entity_average: str = "normalised",
                 box_resolution: str = "original", scoring: Scoring | None = None,
                 pointing_ties: str = POINTING_TIES[0]) -> None:
        if entity_average not in ENTITY_AVERAGES:
            raise ValueError(f"entity_average must be one of {ENTITY_AVERAGES}, got {entity_average!r}")
        if box_resolution not in BOX_RESOLUTIONS:
            raise ValueError(f"box_resolution must be one of {BOX_RESOLUTIONS}, got {box_resolution!r}")
        if scoring is not None and (entity_average, box_resolution) != (ENTITY_AVERAGES[0], BOX_RESOLUTIONS[0]):
            raise ValueError("the detection confidence (--score-threshold / --top-k) needs the default "
                             "entity_average 'normalised' and box_resolution 'original'")
        self.extractor, self.box_fn = extractor, box_fn  # box_fn None → the method's own detect()
        self.gt_mode, self.iou_threshold, self.acc_threshold = gt_mode, iou_threshold, acc_threshold
        self.entity_average, self.box_resolution = entity_average, box_resolution
        self.scoring, self.pointing_ties = scoring, pointing_ties

    def _map_options(self) -> dict[str, bool]:
        # Only non-default requests are passed, so any object with heatmaps(images, phrases) serves the defaults.
        options = {}
        if self.entity_average == "raw":
            options["normalize"] = False
        if self.box_resolution == "model":
            options["native_resolution"] = True
        return options

    def _entity_map(self, maps: Tensor) -> Tensor:
        mean = maps.mean(dim=0)
        return minmax_normalize(mean) if self.entity_average == "raw" else mean

    def _boxes(self, heatmap: Tensor, size_hw: tuple[int, int]) -> Detections:
        if self.box_resolution == "original":
            return self.box_fn(resize_heatmap(heatmap, size_hw, align_corners=False))
        side = int(self.extractor.input_size)
        dets = self.box_fn(resize_heatmap(heatmap, (side, side), align_corners=False))
        scale = torch.tensor([size_hw[1], size_hw[0], size_hw[1], size_hw[0]], dtype=torch.float32) / side
        return Detections(dets.boxes * scale, dets.scores, dets.phrases)

    def process(self, units: Sequence[Unit], images: Sequence[Image.Image]) -> list[dict]:
        phrase_lists = [[p for s in u.samples for p in s.phrases] for u in units]
        ranges = None
        if self.scoring is None:
            maps = _heatmaps_once_per_phrase(self.extractor, images, phrase_lists, **self._map_options())
        else:
            maps, ranges = _maps_once_per_phrase(self.extractor.heatmaps_and_ranges, images, phrase_lists)
        own = None
        if self.box_fn is None:
            own = detections_for(self.extractor, images, [[s.phrases[0] for s in u.samples] for u in units])
        records, all_dets, all_points = [], [], []
        for k, (unit, image_maps) in enumerate(zip(units, maps)):
            size_hw = (images[k].height, images[k].width)
            counts = [len(s.phrases) for s in unit.samples]
            averaged = [self._entity_map(m) for m in image_maps.split(counts)]
            all_points.append(argmax_points([resize_heatmap(m, size_hw, align_corners=False) for m in averaged],
                                            self.pointing_ties).tolist())
            all_dets.append([own[k][j] if own is not None else self._boxes(heatmap, size_hw)
                             for j, heatmap in enumerate(averaged)])
        if self.scoring is not None:
            all_dets = self._confident(units, images, maps, ranges, all_dets)
        for k, (unit, dets, points) in enumerate(zip(units, all_dets, all_points)):
            items = {sample.item_id: {"point": points[j], **_boxes_json(dets[j])} for j, sample in enumerate(unit.samples)}
            records.append({"key": unit.key, "size_hw": [images[k].height, images[k].width], "items": items})
        return records

    def _confident(self, units: Sequence[Unit], images: Sequence[Image.Image], maps: list[Tensor],
                   ranges: list[Tensor], dets: list[list[Detections]]) -> list[list[Detections]]:
        """Per image and item the boxes with their detection confidence, kept by ``scoring``; the crops of
        every box of the batch go through CLIP together."""
        labels = [[s.phrases[0] for s, d in zip(u.samples, ds) for _ in range(len(d))] for u, ds in zip(units, dets)]
        boxes = [torch.cat([d.boxes for d in ds]) if ds else torch.zeros(0, 4) for ds in dets]
        cosines = box_similarity(self.extractor, [to_tensor01(i) for i in images], boxes, labels, self.scoring.view)
        out = []
        for unit, ds, cos, image_maps, image_ranges in zip(units, dets, cosines, maps, ranges):
            counts = [len(s.phrases) for s in unit.samples]
            scored = []
            for d, c, m, r in zip(ds, cos.split([len(d) for d in ds]), image_maps.split(counts),
                                  image_ranges.split(counts)):
                heat = None
                if getattr(self.extractor, "absolute_maps", False):  # the entity map is the mean of its phrases'
                    owner = torch.zeros(len(d), dtype=torch.long)
                    heat = torch.stack([box_heat(mj[None], rj[None], owner, d.boxes) for mj, rj in zip(m, r)]).mean(0)
                scored.append(self.scoring.keep(Detections(d.boxes, confidence(c, heat), d.phrases, d.scores)))
            out.append(scored)
        return out

    def score(self, units: Sequence[Unit], records: dict[str, dict]) -> dict[str, Any]:
        pointing = PointingAccuracy(self.gt_mode, self.pointing_ties)
        bbox = BoxAccuracy(self.iou_threshold, strict=False, box_rule="union")
        acc = AccAtIoU(self.acc_threshold)
        samples = [s for u in units if u.key in records for s in u.samples]
        entries = [records[str(s.image_id)]["items"][s.item_id] for s in samples]
        if samples:
            gts = [s.gt_boxes for s in samples]
            pointing.update(None, gts, points=torch.tensor([e["point"] for e in entries]).reshape(-1, 2))
            bbox.update([_boxes_of(e) for e in entries], gts)
            acc.update([_boxes_of(e) for e in entries], gts)
        return {"pointing": pointing.compute().item(), "bbox_acc": bbox.compute().item(),
                "acc_iou": acc.compute().item(), "acc_iou_threshold": self.acc_threshold,
                "mean_box_iou": bbox.mean_iou().item(), "items": len(samples)}


# ----------------------------------------------------------------------------- WWbL


def prediction_entries(result: Any, pointing_ties: str = POINTING_TIES[0]) -> list[dict]:
    """Predictions-file entries (caption, maximum point, boxes, scores) of one pipeline result."""
    if not result.phrases:
        return []
    points = argmax_points(list(result.heatmaps), pointing_ties).tolist()
    return [{"caption": phrase, "point": point, **_boxes_json(result.boxes_for(phrase))}
            for phrase, point in zip(result.phrases, points)]


class WWbLTask:
    """What-is-where-by-looking on a grounding benchmark (WWbL Table 7).

    ``predict(images) -> per image a list of prediction entries`` (the pipeline, or a lookup in a
    predictions file); ``encode_text(phrases) -> L2-normalised embeddings`` for matching;
    ``match_prefix`` is prepended to GT phrases before encoding (the reference: ``"image of "``
    on Flickr30k/VG, none on ReferIt).
    """

    def __init__(self, predict: Callable[[Sequence[Unit], Sequence[Image.Image]], list[list[dict]]],
                 encode_text: Callable[[Sequence[str]], Tensor], match_prefix: str = "",
                 gt_mode: str = "union", iou_threshold: float = 0.5, drop_empty: bool = False) -> None:
        self.predict, self.encode_text, self.match_prefix = predict, encode_text, match_prefix
        self.gt_mode, self.iou_threshold, self.drop_empty = gt_mode, iou_threshold, drop_empty

    def _gt_embeddings(self, units: Sequence[Unit]) -> list[Tensor]:
        """Per unit ``(G, D)``: each item's mean phrase embedding (all phrases encoded at once)."""
        samples: list[GroundingSample] = [s for u in units for s in u.samples]
        emb = self.encode_text([self.match_prefix + p for s in samples for p in s.phrases]).float().cpu()
        per_item = torch.stack([e.mean(dim=0) for e in emb.split([len(s.phrases) for s in samples])])
        return list(per_item.split([len(u.samples) for u in units]))

    def process(self, units: Sequence[Unit], images: Sequence[Image.Image]) -> list[dict]:
        predictions = self.predict(units, images)
        captions = [p["caption"] for preds in predictions for p in preds]
        emb = self.encode_text(captions).float().cpu() if captions else torch.zeros(0, 1)
        pred_emb = list(emb.split([len(preds) for preds in predictions]))
        gt_emb = self._gt_embeddings(units)
        matches = nearest_captions(pred_emb, gt_emb)
        records = []
        for unit, preds, match in zip(units, predictions, matches):
            items = {s.item_id: {"match": None if match is None else int(match[j])} for j, s in enumerate(unit.samples)}
            records.append({"key": unit.key, "predictions": preds, "items": items})
        return records

    def score(self, units: Sequence[Unit], records: dict[str, dict]) -> dict[str, Any]:
        metric = WWbLMetric(self.iou_threshold, gt_mode=self.gt_mode, drop_empty=self.drop_empty)
        done = [u for u in units if u.key in records]
        matches, points, boxes, gts = [], [], [], []
        for unit in done:
            record = records[unit.key]
            preds = record["predictions"]
            found = [record["items"][s.item_id]["match"] for s in unit.samples]
            matches.append(None if not preds or None in found else torch.tensor(found))
            points.append(torch.tensor([p["point"] for p in preds], dtype=torch.long).reshape(-1, 2))
            boxes.append([_boxes_of(p) for p in preds])
            gts.append([s.gt_boxes for s in unit.samples])
        if done:
            metric.update(None, points, boxes, None, gts, matches=matches)
        out = metric.compute()
        return {"pointing": out["pointing"].item(), "bbox_acc": out["box"].item(),
                "empty_images": int(out["empty_images"]), "items": int(out["items"]), "drop_empty": self.drop_empty}


# ----------------------------------------------------------------------------- WSOL


class WSOLTask:
    """WSOL on CUB / Cars / Dogs / ImageNet (WWbL Tables 2–3, VL-Score).

    ``prompts(class_names) -> list[str]``: the texts for a class (their heatmaps are averaged);
    ``classify(images) -> (N, C) scores`` or ``None`` to skip top-k localisation.
    """

    def __init__(self, extractor: Any, box_fn: BoxFn | None, prompts: Callable[[tuple[str, ...]], list[str]],
                 classify: Callable[[Sequence[Image.Image]], Tensor] | None, iou_threshold: float = 0.5,
                 strict: bool = False, iou_area: str = "continuous") -> None:
        self.extractor, self.box_fn, self.prompts, self.classify = extractor, box_fn, prompts, classify
        self.iou_threshold, self.strict, self.iou_area = iou_threshold, strict, iou_area

    def process(self, units: Sequence[Unit], images: Sequence[Image.Image]) -> list[dict]:
        samples: list[WSOLSample] = [u.samples[0] for u in units]
        texts = [self.prompts(s.class_names) for s in samples]
        if self.box_fn is None:
            dets = [d[0] for d in detections_for(self.extractor, images, [t[:1] for t in texts])]
        else:
            dets = [self.box_fn(m.mean(dim=0)) for m in self.extractor.heatmaps(list(images), texts)]
        ranks = None
        if self.classify is not None:
            scores = self.classify(images)
            ranks = scores.topk(min(5, scores.shape[1]), dim=1).indices.tolist()
        return [{"key": u.key, **_boxes_json(d), **({"topk": ranks[i]} if ranks is not None else {})}
                for i, (u, d) in enumerate(zip(units, dets))]

    def score(self, units: Sequence[Unit], records: dict[str, dict]) -> dict[str, Any]:
        done = [u for u in units if u.key in records]
        gts = [u.samples[0].gt_boxes for u in done]
        preds = [_boxes_of(records[u.key]) for u in done]
        gt_known = GTKnownLoc(self.iou_threshold, strict=self.strict, iou_area=self.iou_area)
        out: dict[str, Any] = {"items": len(done)}
        if done:
            gt_known.update(preds, gts)
        out["gt_known_loc"] = gt_known.compute().item()
        out["mean_box_iou"] = gt_known.mean_iou().item()
        if done and all("topk" in records[u.key] for u in done):
            ranks = torch.tensor([records[u.key]["topk"] for u in done])
            metric = TopKLoc((1, 5) if ranks.shape[1] >= 5 else (1,), self.iou_threshold, self.strict,
                             self.iou_area)
            metric.update(preds, gts, None, torch.tensor([u.samples[0].label for u in done]), ranked=ranks)
            out.update({k: v.item() for k, v in metric.compute().items() if k not in ("gt_known_loc", "mean_iou")})
        return out


# ----------------------------------------------------------------------------- masks


class MaskTask:
    """Mask localisation on CocoGlide (the poster): mean IoU over 100 thresholds and PxAP."""

    def __init__(self, extractor: Any, prompt: Callable[[str], str], closing: int = 1) -> None:
        self.extractor, self.prompt, self.closing = extractor, prompt, closing

    def process(self, units: Sequence[Unit], images: Sequence[Image.Image]) -> list[dict]:
        samples: list[MaskSample] = [u.samples[0] for u in units]
        maps = self.extractor.heatmaps(list(images), [[self.prompt(s.label)] for s in samples])
        records = []
        for unit, sample, image, heatmap in zip(units, samples, images, maps):
            heatmap = heatmap[0]
            if self.closing > 1:
                heatmap = close_map(heatmap, self.closing, self.closing).clamp(0, 1)
            mask = load_mask(sample.mask_path, (image.height, image.width))
            sweep, pxap = MeanIoUSweep(), PxAP()
            sweep.update([heatmap], [mask])
            pxap.update([heatmap], [mask])
            records.append({"key": unit.key, "iou_curve": [round(v, 8) for v in sweep.iou_sum.tolist()],
                            "fg_hist": pxap.fg_hist.tolist(), "bg_hist": pxap.bg_hist.tolist()})
        return records

    def score(self, units: Sequence[Unit], records: dict[str, dict]) -> dict[str, Any]:
        done = [records[u.key] for u in units if u.key in records]
        sweep, pxap = MeanIoUSweep(), PxAP()
        if done:  # the records hold each image's metric states: sum them (as a DDP reduction would)
            sweep.merge_state({"iou_sum": torch.tensor([r["iou_curve"] for r in done], dtype=torch.float64).sum(0),
                               "images": torch.tensor(len(done))})
            pxap.merge_state({"fg_hist": torch.tensor([r["fg_hist"] for r in done], dtype=torch.float64).sum(0),
                              "bg_hist": torch.tensor([r["bg_hist"] for r in done], dtype=torch.float64).sum(0)})
        with warnings.catch_warnings():  # merged states, not update(): torchmetrics' "no update" warning is moot
            warnings.filterwarnings("ignore", message=".*called before the ``update``")
            result, pxap_value = sweep.compute(), pxap.compute()
        return {"best_miou": result["best_miou"].item(), "best_threshold": result["best_threshold"].item(),
                "miou_curve": [round(v, 6) for v in result["curve"].tolist()], "pxap": pxap_value.item(),
                "items": len(done), "closing": self.closing}
