"""Does the detection confidence separate right boxes from wrong ones? ROC AUC on the shapes world.

    python -m shapes_world.score_auc --root data/shapes/flickr30k --limit 200

For each held-out test image (``data/shapes/flickr30k``, ``test`` split, written by
``python -m shapes_world.writers``) the shipped g (``checkpoints/shapes_g`` with its CLIP) grounds
every present phrase ("a red square", one per annotated object, no area filter) and
``--absent`` phrases of the world that are not in the image (seen colour–shape combinations, drawn
per image with a fixed seed; many share a colour or a shape with an object that is there). Every
box the WSG rule cuts is labelled **correct** (a present phrase's box with IoU ≥ 0.5 against that
object's box) or **wrong** (an absent phrase's box, or IoU < 0.5), and each score's ROC AUC over
the boxes is reported: the rule's own score (mean min-max-normalised heat, ``box_score``), the new
confidence, and its two terms alone. Per phrase it also reports how many absent phrases get no box
and how many present phrases keep their correct box at a few confidence thresholds.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from shapes_world.captions import with_article
from shapes_world.config import load_world_config
from shapes_world.generator import ShapesWorld
from wwbl.box_rules import BoxRule
from wwbl.defaults import SCORE_VIEWS
from wwbl.images import as_tensor01, load_image
from wwbl.inference.api import load
from wwbl.inference.scoring import box_heat, box_similarity, confidence
from wwbl.readers.flickr30k import load_flickr30k

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.25, 0.3, 0.35, 0.4)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative,
    ties counting one half (Mann–Whitney U over the average ranks)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("the AUC needs at least one positive and one negative")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):  # tied scores share their average rank (1-based)
        ranks[order[start:end]] = (start + end + 1) / 2
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def image_queries(samples: list, absent_pool: list[str], count: int, rng: np.random.Generator
                  ) -> tuple[list[str], dict[str, torch.Tensor]]:
    """One image's phrases (present first, then ``count`` absent ones) and each present phrase's GT box."""
    present = {s.phrases[0]: s.gt_boxes for s in samples}
    pool = [p for p in absent_pool if p not in present]
    absent = [pool[i] for i in rng.choice(len(pool), size=min(count, len(pool)), replace=False)]
    return list(present) + absent, present


def measure(root: str, checkpoint: str, limit: int, absent: int, seed: int, world_config: str,
            batch_size: int, view: str = SCORE_VIEWS[0], split: str = "test") -> dict:
    """Scores and labels of every box, and the AUCs."""
    world, _ = load_world_config(world_config)
    pool = [with_article(f"{c} {s}") for c, s in ShapesWorld(world).combos_for("test")]
    index = load_flickr30k(root, split=split, min_area_fraction=None)
    by_image: dict[str, list] = {}
    for sample in index.samples:
        by_image.setdefault(sample.image_id, []).append(sample)
    images = list(by_image)[:limit]
    model = load(checkpoint, scoring=None)
    extractor, rule = model.heatmaps, BoxRule()
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"rule": [], "confidence": [], "heat": [], "clip": [], "correct": [], "present": [],
                             "phrase": []}
    phrase_ids, absent_total = 0, 0
    for start in range(0, len(images), batch_size):
        keys = images[start:start + batch_size]
        pictures = [as_tensor01(load_image(by_image[k][0].image_path)) for k in keys]
        queries = [image_queries(by_image[k], pool, absent, rng) for k in keys]
        maps, ranges = extractor.heatmaps_and_ranges(pictures, [q[0] for q in queries])
        for (phrases, present), hm, span, picture in zip(queries, maps, ranges, pictures):
            per_map = [rule.detect(m) for m in hm]
            boxes = torch.cat([d.boxes for d in per_map])
            owner = torch.cat([torch.full((len(d),), k, dtype=torch.long) for k, d in enumerate(per_map)])
            labels = [phrases[k] for k in owner.tolist()]
            cos = box_similarity(extractor, [picture], [boxes], [labels], view)[0]
            heat = box_heat(hm, span, owner, boxes)
            for j, phrase in enumerate(labels):
                gt = present.get(phrase)
                hit = gt is not None and float(box_iou(boxes[j:j + 1], gt).max()) >= 0.5
                rows["correct"].append(hit)
                rows["present"].append(gt is not None)
                rows["phrase"].append(phrase_ids + int(owner[j]))
            rows["rule"] += torch.cat([d.scores for d in per_map]).tolist()
            rows["confidence"] += confidence(cos, heat).tolist()
            rows["heat"] += heat.tolist()
            rows["clip"] += cos.tolist()
            phrase_ids += len(phrases)
            absent_total += len(phrases) - len(present)
    return {"view": view, **summarise(rows, len(images), phrase_ids, absent_total),
            "naming": naming(extractor, by_image, images, pool, view)}


def naming(extractor: object, by_image: dict[str, list], images: list[str], pool: list[str], view: str) -> dict:
    """With ground-truth boxes, how often CLIP's best phrase for an object's box is the object's own:
    among the image's phrases (``among_present``, what ``--cross-phrase-iou`` relies on) and among the
    world's phrases of the object's colour (``among_same_colour``, shape alone)."""
    hits = {"among_present": 0, "among_same_colour": 0}
    objects = 0
    for key in images:
        samples = by_image[key]
        picture = as_tensor01(load_image(samples[0].image_path))
        names = [s.phrases[0] for s in samples]
        boxes = torch.cat([s.gt_boxes[:1] for s in samples])
        for k, name in enumerate(names):
            rivals = {"among_present": names,
                      "among_same_colour": [p for p in pool if p.split()[-2] == name.split()[-2]] or [name]}
            for what, phrases in rivals.items():
                phrases = list(dict.fromkeys([name, *phrases]))
                cos = box_similarity(extractor, [picture], [boxes[k:k + 1].expand(len(phrases), 4)], [phrases], view)[0]
                hits[what] += int(int(cos.argmax()) == 0)
            objects += 1
    return {"objects": objects, **{what: round(count / max(objects, 1), 4) for what, count in hits.items()}}


def summarise(rows: dict[str, list], images: int, phrases: int, absent_phrases: int) -> dict:
    """AUCs over the boxes, and per confidence threshold what is kept of right and wrong boxes and phrases."""
    correct = np.array(rows["correct"])
    result = {"images": images, "present_phrases": phrases - absent_phrases, "absent_phrases": absent_phrases,
              "boxes": len(correct), "correct_boxes": int(correct.sum()),
              "auc": {name: round(roc_auc(rows[name], correct), 4) for name in ("rule", "confidence", "heat", "clip")}}
    phrase = np.array(rows["phrase"])
    present = np.array(rows["present"])
    conf = np.array(rows["confidence"])
    per_threshold = [{"threshold": None, "correct_boxes_kept": 1.0, "wrong_boxes_dropped": 0.0,
                      "absent_phrases_with_a_box": len(set(phrase[~present])),
                      "present_phrases_with_a_correct_box": len(set(phrase[present & correct]))}]
    for threshold in THRESHOLDS:
        kept = conf >= threshold
        per_threshold.append({
            "threshold": threshold,
            "correct_boxes_kept": round(float(kept[correct].mean()), 4),
            "wrong_boxes_dropped": round(float(1 - kept[~correct].mean()), 4),
            "absent_phrases_with_a_box": len(set(phrase[~present & kept])),
            "present_phrases_with_a_correct_box": len(set(phrase[present & correct & kept]))})
    result["thresholds"] = per_threshold
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(REPO / "data" / "shapes" / "flickr30k"))
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "shapes_g"))
    parser.add_argument("--world", default=str(REPO / "configs" / "shapes" / "world.yaml"))
    parser.add_argument("--limit", type=int, default=200, help="test images")
    parser.add_argument("--absent", type=int, default=3, help="absent phrases per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="the list of --root to score (val: to choose a threshold without the test split)")
    parser.add_argument("--view", choices=SCORE_VIEWS, default=SCORE_VIEWS[0], help="how CLIP sees a box")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    result = measure(args.root, args.checkpoint, args.limit, args.absent, args.seed, args.world, args.batch_size,
                     args.view, args.split)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
