"""The evaluation command: one entry for WSG, WWbL, WSOL and mask benchmarks.

``run_evaluation(settings)`` loads the benchmark (``wwbl.readers``), builds the heatmap
source (an exported network g via ``NetworkGExtractor.from_export`` or any registered extractor by
name), processes images in batches with a progress bar, and appends one JSON record per image to
``<out>/records.jsonl``. A rerun with the same settings skips the images already recorded (the
settings that change results are stored in ``<out>/run.json`` and must match; the caption chunk size
and the sharing of identical crops are exact, so they may differ); a record cut short by a kill, one
made for annotations that have changed since, or a repeated one is never scored
(``wwbl.evaluation.records``). Images that cannot be loaded or processed are skipped and listed in
``<out>/skipped.json``, as are the annotation items the loader rejected and the items whose GT box
lies wholly outside their image. The metrics are computed from the records of the benchmark's
current images and written to ``<out>/results.json`` plus the papers' tables
(``wwbl.evaluation.tables``); ``run.json``, ``results.json`` and ``skipped.json`` are written
atomically (``wwbl.atomic_files``).

Box sources (``boxes``): ``"wsg"`` — the WSG :class:`~wwbl.box_rules.BoxRule` with ``box_mode``
``"paper"`` or ``"reference"``; ``"wsol"`` — the WSOL rule (largest contour, of the map or, with
``box_mode="reference"``, of its cubehelix gray as the released WSOL code); ``"method"`` — the
extractor's own ``detect`` (Adapting-CLIP's box search, Crop & Rank, VL-Score's components);
``"auto"`` — ``"method"`` when the extractor has ``detect``, else ``"wsol"`` for WSOL and ``"wsg"``
otherwise (WWbL: ``"wsol"`` or else ``"wsg"``). ``box_threshold`` / ``box_nms_iou`` (``None`` = the
rule's defaults) reach the rule as in ``infer.py``; so do the WWbL pipeline's ``pipeline`` options
(:class:`~wwbl.inference.options.WWbLOptions`: proposals, caption decoding, clustering).
``score_threshold`` / ``cross_phrase_iou`` / ``top_k`` (WSG and WWbL; off by default, so the benchmark
numbers are the papers' protocol) score the boxes by detection confidence (:mod:`wwbl.inference.scoring`,
seen by CLIP as ``score_view``) and keep them by it.

Released-code evaluation choices, each a setting with the paper-faithful default:
``entity_average`` (``"normalised"`` | ``"raw"``) and ``box_resolution`` (``"original"`` |
``"model"``) for WSG (see ``wwbl.evaluation.tasks``), ``wsol_iou_area`` (``"continuous"`` |
``"inclusive"``, the released WSOL code's ``+1`` pixel terms) for WSOL.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from wwbl.atomic_files import write_text_atomic
from wwbl.box_rules import BoxRule
from wwbl.clip import ClipSpec
from wwbl.errors import AnnotationError, ImageLoadError, MissingResourceError
from wwbl.evaluation.records import RecordCache, results_identity, scored_unit, unit_fingerprint
from wwbl.evaluation.tables import write_tables
from wwbl.evaluation.tasks import GroundingTask, MaskTask, Unit, WSOLTask, WWbLTask, group_by_image, prediction_entries
from wwbl.extractors.base import build_extractor
from wwbl.extractors.network_g import NetworkGExtractor
from wwbl.images import load_image, resize_square, to_tensor01
from wwbl.inference.api import WWbLModel
from wwbl.defaults import DEFAULT_CAPTIONER, MAX_SIDE, POINTING_TIES, SCORE_VIEWS
from wwbl.inference.options import WWbLOptions, pipeline_options_from_args
from wwbl.inference.scoring import Scoring
from wwbl.metrics import argmax_points
from wwbl.readers import TASK_OF, ZSG_SPLITS, DatasetIndex, acc_threshold, load_dataset
from wwbl.readers.common import box_tensor, boxes_outside_image, read_text, sample_id

log = logging.getLogger(__name__)
TASKS = ("wsg", "wwbl", "wsol", "masks")
_DATASET_TASK = {"wsg": "grounding", "wwbl": "grounding", "wsol": "wsol", "masks": "masks"}
# Settings that do not change any result (left out of the resume check).
_VOLATILE = ("out", "limit", "batch_size", "device", "label", "progress")
# Settings recorded only when not at these values (their defaults), so runs from before they existed still resume.
_ONLY_WHEN_SET = {"score_threshold": None, "top_k": None, "cross_phrase_iou": None, "score_view": SCORE_VIEWS[0],
                  "max_side": MAX_SIDE}
@dataclass
class EvalSettings:
    """Everything one evaluation run needs (the CLI maps its flags onto these fields)."""

    task: str
    dataset: str
    root: str
    out: str
    split: str = "test"
    method: str | None = None
    checkpoint: str | None = None
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    clip_checkpoint: str | None = None
    device: str = "cpu"
    text_prefix: str | None = None  # the extractor's prefix; None = its default (an export's own for g)
    extractor_options: dict[str, Any] = field(default_factory=dict)
    loader_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    batch_size: int = 8
    boxes: str = "auto"
    box_mode: str = "paper"
    box_threshold: float | None = None  # None = the rule's default (0.5 WSG, 0.1 WSOL)
    box_nms_iou: float | None = None  # WSG only; None = the mode's default (0.3 paper, 0.05 reference)
    entity_average: str = "normalised"  # WSG: min-max each phrase map before an entity's average; "raw" = released
    box_resolution: str = "original"  # WSG: cut boxes at the original size; "model" = at S, scaled (released)
    wsol_iou_area: str = "continuous"  # WSOL: "inclusive" = the released +1 pixel terms
    gt_mode: str = "union"
    pointing_ties: str = POINTING_TIES[0]  # WSG / WWbL: a flat top's point, "centre" or "first" (released)
    iou_threshold: float = 0.5
    acc_threshold: float | None = None  # Acc@thr; None = ZSGNet's (0.5 Flickr, 0.3 VG)
    strict: bool = False  # WSOL: IoU > thr instead of >=
    predictions: str | None = None  # WWbL: JSON-lines predictions instead of running the pipeline
    captioner: str | None = None  # WWbL: BLIP source for the pipeline
    pipeline: WWbLOptions = field(default_factory=WWbLOptions)  # WWbL: proposals, captioning, clustering
    max_side: int | None = MAX_SIDE  # WWbL: working resolution (larger images are processed downscaled)
    match_prefix: str | None = None  # WWbL: GT text prefix; None = the reference's per dataset
    drop_empty: bool = False  # WWbL: exclude images without predictions (the reference)
    score_threshold: float | None = None  # WSG / WWbL: drop boxes under this detection confidence (None: off)
    top_k: int | None = None  # WSG / WWbL: keep an image's k most confident boxes (None: off)
    cross_phrase_iou: float | None = None  # WSG / WWbL: one name per object (None: off)
    score_view: str = SCORE_VIEWS[0]  # how CLIP sees a box for its confidence (when one of the three is on)
    prompt: str = "an image of a {}."  # WSOL / masks: class / label prompt
    all_names: bool = True  # WSOL: average heatmaps over a class's synonyms
    classify: bool = True  # WSOL: zero-shot top-1/top-5 (needs the extractor's CLIP)
    class_prompt: str = "an image of a {}."  # WSOL: classification template (synonyms averaged)
    closing: int = 1  # masks: dilation-then-erosion kernel (the poster: 41–61)
    label: str | None = None  # row name in the tables
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.dataset in TASK_OF and TASK_OF[self.dataset] != _DATASET_TASK[self.task]:
            raise ValueError(f"dataset {self.dataset!r} is a {TASK_OF[self.dataset]} benchmark, not for '{self.task}'")
        needs_source = not (self.task == "wwbl" and self.predictions)
        if needs_source and (self.method is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of --checkpoint (an exported g) or --method (an extractor name)")
        if self.boxes not in ("auto", "wsg", "wsol", "method"):
            raise ValueError(f"unknown box source {self.boxes!r}; expected auto, wsg, wsol or method")
        if self.pointing_ties not in POINTING_TIES:
            raise ValueError(f"unknown pointing_ties {self.pointing_ties!r}; expected one of {', '.join(POINTING_TIES)}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    @property
    def row_label(self) -> str:
        if self.label:
            return self.label
        if self.checkpoint:
            return f"g ({Path(self.checkpoint).name})"
        return self.method or f"predictions ({Path(self.predictions or '').name})"

    def identity(self) -> dict[str, Any]:
        """The settings a cached record depends on, as they read back from ``run.json`` (JSON types)."""
        return results_identity(json.loads(json.dumps(
            {k: v for k, v in asdict(self).items()
             if k not in _VOLATILE and not (k in _ONLY_WHEN_SET and v == _ONLY_WHEN_SET[k])})))

    @property
    def scoring(self) -> Scoring | None:
        """The detection-confidence filter, or None (boxes keep the rule's score) when no filtering knob is set."""
        if self.score_threshold is None and self.top_k is None and self.cross_phrase_iou is None:
            return None
        return Scoring(threshold=self.score_threshold, top_k=self.top_k, view=self.score_view,
                       cross_phrase_iou=self.cross_phrase_iou)

    def box_rule(self, rule: str) -> BoxRule:
        """The run's :class:`BoxRule` of kind ``rule`` ("wsg" or "wsol")."""
        return BoxRule(rule=rule, mode=self.box_mode, threshold=self.box_threshold, nms_iou=self.box_nms_iou)


# ----------------------------------------------------------------------------- sources


def build_clip(settings: EvalSettings) -> Any:
    return ClipSpec(settings.clip_model, settings.clip_pretrained, settings.clip_checkpoint).build(settings.device)


def build_heatmap_source(settings: EvalSettings, clip: Any = None) -> Any:
    """The exported g or the named extractor, with the run's text prefix and batch size."""
    options = dict(settings.extractor_options)
    if settings.text_prefix is not None:
        options["text_prefix"] = settings.text_prefix
    elif settings.task == "wwbl":
        options["text_prefix"] = ""  # the reference queries g with the raw captions in WWbL
    options.setdefault("images_per_batch", settings.batch_size)
    if settings.checkpoint:
        return NetworkGExtractor.from_export(settings.checkpoint, clip=clip, **options)
    return build_extractor(settings.method, clip if clip is not None else build_clip(settings), **options)


def box_function(settings: EvalSettings, extractor: Any) -> Callable | None:
    """Heatmap → Detections for the run's box source; ``None`` means the method's ``detect``."""
    source = settings.boxes
    if source == "auto":
        source = "method" if hasattr(extractor, "detect") else ("wsol" if settings.task == "wsol" else "wsg")
    if source == "method":
        if not hasattr(extractor, "detect"):
            raise ValueError(f"extractor {settings.method!r} has no box method of its own; use --boxes wsg or wsol")
        return None
    return settings.box_rule(source).detect


def zero_shot_classifier(clip: Any, class_names: Sequence[tuple[str, ...]], prompt: str) -> Callable:
    """Images → ``(N, C)`` cosine scores against each class's prompt embeddings (averaged over
    synonyms, re-normalised; VL-Score). Images are resized whole to CLIP's square input (no crop)."""
    texts = [[prompt.format(n) for n in names] for names in class_names]
    flat = [t for group in texts for t in group]
    emb = clip.encode_text(flat).float()
    groups = emb.split([len(g) for g in texts])
    classes = torch.nn.functional.normalize(torch.stack([g.mean(dim=0) for g in groups]), dim=-1)

    @torch.no_grad()
    def classify(images: Sequence[Image.Image]) -> torch.Tensor:
        square = resize_square([to_tensor01(img) for img in images], clip.image_size)
        return (clip.encode_image(square.to(clip.device)).float() @ classes.T.to(clip.device)).cpu()

    return classify


def _prediction_entry(pred: Any, pointing_ties: str) -> dict:
    """One prediction of a predictions file, checked: a caption, a point, boxes and their scores."""
    point = pred.get("point")
    if point is None:
        point = argmax_points([torch.from_numpy(np.load(pred["heatmap_npy"])).float()], pointing_ties)[0].tolist()
    boxes, scores = pred.get("boxes", []), pred.get("scores", [])
    if boxes:
        box_tensor(boxes, "boxes")
    if not isinstance(scores, list) or len(scores) != len(boxes) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
        raise ValueError(f"'scores' must be one number per box, got {scores!r}")
    if not isinstance(pred["caption"], str) or not pred["caption"].strip():
        raise ValueError(f"empty or non-text caption {pred['caption']!r}")
    return {"caption": pred["caption"], "point": [int(point[0]), int(point[1])], "boxes": boxes, "scores": scores}


def read_predictions(path: str, pointing_ties: str = POINTING_TIES[0]) -> dict[str, list[dict]]:
    """A WWbL predictions file: JSON lines ``{"image_id" | "key": …, "predictions": [{"caption",
    "point": [row, col], "boxes": [[x1, y1, x2, y2], …], "scores": […]}]}`` (``records.jsonl`` of a
    WWbL run has this form). An entry may give ``"heatmap_npy"`` (an ``H×W`` .npy map) instead of
    ``"point"``. A malformed line or an image given twice fails the file, naming the line."""
    file = Path(path)
    if not file.is_file():
        raise MissingResourceError(f"WWbL predictions file not found: '{file}'")
    table: dict[str, list[dict]] = {}
    for number, line in enumerate(read_text(file, "WWbL predictions file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key = row.get("image_id", row.get("key"))
            if key is None:
                raise KeyError("image_id")
            entries = [_prediction_entry(pred, pointing_ties) for pred in row["predictions"]]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, OSError) as err:
            raise AnnotationError(f"'{file}' line {number}: not a valid prediction record ({err})") from err
        if str(key) in table:
            raise AnnotationError(f"'{file}' line {number}: image {key} has predictions on an earlier line")
        table[str(key)] = entries
    return table


def _match_prefix(settings: EvalSettings) -> str:
    if settings.match_prefix is not None:
        return settings.match_prefix
    return "" if settings.dataset == "referit" else "image of "


def build_task(settings: EvalSettings, index: DatasetIndex, extractor: Any, clip: Any) -> Any:
    """The task object for the run (see ``wwbl.evaluation.tasks``)."""
    if settings.task == "wsg":
        acc = settings.acc_threshold or (acc_threshold(settings.dataset) if settings.dataset in ZSG_SPLITS else 0.5)
        return GroundingTask(extractor, box_function(settings, extractor), settings.gt_mode, settings.iou_threshold,
                             acc, settings.entity_average, settings.box_resolution, settings.scoring,
                             settings.pointing_ties)
    if settings.task == "wwbl":
        return WWbLTask(_wwbl_predictor(settings, extractor), clip.encode_text, _match_prefix(settings),
                        settings.gt_mode, settings.iou_threshold, settings.drop_empty)
    if settings.task == "wsol":
        def prompts(names: tuple[str, ...]) -> list[str]:
            return [settings.prompt.format(n) for n in (names if settings.all_names else names[:1])]

        classify = None
        if settings.classify and index.class_names and getattr(extractor, "clip", None) is not None:
            classify = zero_shot_classifier(extractor.clip, index.class_names, settings.class_prompt)
        return WSOLTask(extractor, box_function(settings, extractor), prompts, classify, settings.iou_threshold,
                        settings.strict, settings.wsol_iou_area)
    return MaskTask(extractor, settings.prompt.format, settings.closing)


def _wwbl_predictor(settings: EvalSettings, extractor: Any) -> Callable:
    if settings.predictions:
        table = read_predictions(settings.predictions, settings.pointing_ties)
        return lambda units, images: [table.get(u.key, []) for u in units]
    rule = settings.box_rule("wsol" if settings.boxes == "wsol" else "wsg")
    model = WWbLModel(extractor, settings.captioner or DEFAULT_CAPTIONER, boxes=rule, options=settings.pipeline,
                      scoring=settings.scoring, max_side=settings.max_side)
    return lambda units, images: [prediction_entries(r, settings.pointing_ties) for r in model.detect_batch(list(images))]


# ----------------------------------------------------------------------------- runner


def _outside_image(unit: Unit, size_hw: tuple[int, int]) -> tuple[Unit, list[str]]:
    """``unit`` without the samples whose GT boxes lie wholly outside the loaded image, and a line for each."""
    kept, rejected = [], []
    for sample in unit.samples:
        boxes = getattr(sample, "gt_boxes", None)
        outside = boxes_outside_image(boxes, size_hw) if boxes is not None else None
        if outside is not None and outside.any():
            rejected.append(f"{unit.key}: {sample_id(sample)}: GT box {boxes[outside][0].tolist()} lies outside the "
                            f"{size_hw[1]}x{size_hw[0]} image")
        else:
            kept.append(sample)
    return Unit(unit.key, unit.image_path, kept), rejected


def _load_images(units: Sequence[Unit], problems: dict[str, list[str]]) -> tuple[list[Unit], list[Image.Image]]:
    """The units whose image loads (each with the samples that fit in it) and their images; a unit that
    fails, or has no sample left, gets its lines in ``problems``."""
    kept, images = [], []
    for unit in units:
        try:
            image = load_image(unit.image_path)
        except ImageLoadError as err:
            problems[unit.key] = [f"{unit.key}: {err}"]
            continue
        fitted, rejected = _outside_image(unit, (image.height, image.width))
        problems[unit.key] = rejected
        if fitted.samples:
            kept.append(fitted)
            images.append(image)
    return kept, images


def _process(task: Any, units: list[Unit], images: list[Image.Image], problems: dict[str, list[str]]) -> list[dict]:
    """Records for a batch; when the batch fails, each image alone, reporting the ones that fail."""
    try:
        return task.process(units, images)
    except (ValueError, TypeError, RuntimeError, OSError, KeyError) as err:
        if len(units) == 1:
            problems[units[0].key].append(f"{units[0].key}: {type(err).__name__}: {err}")
            return []
    records = []
    for unit, image in zip(units, images):
        records.extend(_process(task, [unit], [image], problems))
    return records


def _run_pending(task: Any, pending: list[Unit], cache: RecordCache, done: dict[str, dict],
                 problems: dict[str, list[str]], settings: EvalSettings, bar: tqdm) -> None:
    """Process ``pending`` in batches; each record carries its image's fingerprint and rejected items."""
    for start in range(0, len(pending), settings.batch_size):
        chunk = pending[start: start + settings.batch_size]
        batch, images = _load_images(chunk, problems)
        records = _process(task, batch, images, problems) if batch else []
        full = {u.key: u for u in chunk}
        for record in records:
            record["inputs"] = unit_fingerprint(full[record["key"]])
            if problems[record["key"]]:
                record["rejected"] = problems[record["key"]]
            done[record["key"]] = record
        cache.add(records)
        bar.update(len(chunk))


def run_evaluation(settings: EvalSettings, extractor: Any = None, clip: Any = None) -> dict[str, Any]:
    """Run (or resume) one evaluation; returns the results dict also written to ``results.json``.

    ``skipped.json`` lists the annotation items the reader rejected, then per image (in benchmark order)
    an image that failed and the items whose GT lies outside their image; a resumed run lists the same.
    """
    out = Path(settings.out)
    index = load_dataset(settings.dataset, settings.root, settings.split, **settings.loader_options)
    cache = RecordCache(out, settings.identity())
    units = group_by_image(index.samples)[: settings.limit] if settings.limit else group_by_image(index.samples)
    needs_source = not (settings.task == "wwbl" and settings.predictions)
    if extractor is None and needs_source:
        extractor = build_heatmap_source(settings, clip)
    if clip is None:
        clip = getattr(extractor, "clip", None) if extractor is not None else None
    if clip is None and settings.task == "wwbl":
        clip = build_clip(settings)
    task = build_task(settings, index, extractor, clip)
    done = {u.key: r for u in units if (r := cache.fitting(u)) is not None}
    problems = {key: list(record.get("rejected", [])) for key, record in done.items()}
    stale = sum(u.key in cache.by_key and u.key not in done for u in units)
    if stale:
        log.warning("%d image(s) recorded for other annotations are redone", stale)
    pending = [u for u in units if u.key not in done]
    with tqdm(total=len(units), initial=len(done), desc=f"{settings.task}:{settings.dataset}",
              disable=not settings.progress, unit="img") as bar:
        _run_pending(task, pending, cache, done, problems, settings, bar)
    scored = [scored_unit(u, done[u.key]) for u in units if u.key in done]
    metrics = task.score(scored, done)
    skipped = list(index.skipped) + [line for u in units for line in problems.get(u.key, [])]
    results = {"task": settings.task, "dataset": settings.dataset, "split": settings.split,
               "method": settings.row_label, "metrics": metrics, "images": len(scored), "images_total": len(units),
               "skipped": len(skipped), "settings": settings.identity()}
    write_text_atomic(out / "skipped.json", json.dumps(skipped, indent=2))
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    for line in skipped[:20]:
        log.warning("skipped %s", line)
    write_tables([results], out)
    return results


def key_values(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parsed as JSON when possible (numbers, booleans, lists), else strings."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """The settings named by ``python -m wwbl.evaluation``'s flags (``wwbl.evaluation.__main__``)."""
    extra = {name: getattr(args, name) for name in ("gt_mode", "pointing_ties", "acc_threshold", "predictions", "captioner",
                                                     "match_prefix", "drop_empty", "prompt",
                                                     "strict", "closing", "class_prompt", "entity_average",
                                                     "box_resolution", "wsol_iou_area", "score_threshold",
                                                     "top_k", "cross_phrase_iou", "score_view", "max_side") if hasattr(args, name)}
    if hasattr(args, "first_name_only"):
        extra["all_names"] = not args.first_name_only
    if hasattr(args, "no_classify"):
        extra["classify"] = not args.no_classify
    if args.command == "wwbl":
        extra["pipeline"] = pipeline_options_from_args(args)
    return EvalSettings(task=args.command, dataset=args.dataset, root=args.root, out=args.out, split=args.split,
                        method=args.method, checkpoint=args.checkpoint, clip_model=args.clip_model,
                        clip_pretrained=args.clip_pretrained, clip_checkpoint=args.clip_checkpoint,
                        device=args.device, text_prefix=args.text_prefix,
                        extractor_options=key_values(args.option), loader_options=key_values(args.loader_option),
                        limit=args.limit, batch_size=args.batch_size, boxes=args.boxes, box_mode=args.box_mode,
                        box_threshold=args.box_threshold, box_nms_iou=args.box_nms_iou,
                        iou_threshold=args.iou_threshold, label=args.label, progress=not args.no_progress, **extra)
