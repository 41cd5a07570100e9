"""The image-folder batch job behind ``infer.py``: build the model from the parsed flags, run WSG,
WWbL or the iterative variant over the images in batches, write each image's outputs, and report
and skip bad items (a failing batch is retried image by image).

Every input ends in exactly one place: its outputs, or ``failures.json`` with the reason. Exit
status: 0 when every input was written, 1 when any input failed (the others are still written),
2 for a user error (missing weights or files, an unavailable device), with a one-line message.
JSON files are written atomically (a killed run never leaves half a JSON). Memory stays bounded
for huge images: a batch holds only their working copies (``--max-side``) and display copies
(`wwbl.inference.pictures.MAX_OVERLAY_PIXELS`); one image's heatmaps at a time are mapped back to
its full frame, for writing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from wwbl.atomic_files import write_text_atomic
from wwbl.defaults import DEFAULT_CAPTIONER
from wwbl.devices import autocast, resolve_device
from wwbl.errors import ImageLoadError, MissingResourceError
from wwbl.images import load_image, working_copy
from wwbl.inference.api import WWbLModel, load
from wwbl.inference.coco_results import CocoIds, record_coco_records, write_coco_results
from wwbl.inference.options import box_rule_from_args, pipeline_options_from_args, scoring_from_args
from wwbl.inference.outputs import complete_record, write_image_outputs
from wwbl.inference.pictures import display_size
from wwbl.inference.results import GroundingResult, in_frame


def build_model(args: argparse.Namespace) -> WWbLModel:
    """The model the flags name (``args.device`` already resolved)."""
    options = {} if args.text_prefix is None else {"text_prefix": args.text_prefix}
    clip = args.clip_model if args.clip_model or args.method != "g" else None
    return load(args.checkpoint, clip=clip, clip_pretrained=args.clip_pretrained,
                clip_checkpoint=args.clip_checkpoint, captioner=args.captioner or DEFAULT_CAPTIONER,
                method=args.method, device=args.device, boxes=box_rule_from_args(args),
                options=pipeline_options_from_args(args), scoring=scoring_from_args(args), max_side=args.max_side,
                **options)


def run_images(model: WWbLModel, images: list, args: argparse.Namespace) -> list:
    with autocast(args.device, args.precision):  # extractors return float32 maps whatever the autocast dtype
        if args.phrase:
            return model.ground_batch(images, [args.phrase] * len(images))
        if args.iterative:
            return model.detect_iterative(images)
        return model.detect_batch(images)


@dataclass
class Loaded:
    """One input, held small: its working copy (``--max-side``), the copy its pictures are drawn on
    (at most `MAX_OVERLAY_PIXELS`) and its original ``(height, width)`` (the full-size image is dropped)."""

    work: Image.Image
    display: Image.Image
    size: tuple[int, int]

    @classmethod
    def from_file(cls, path: Path, max_side: int | None) -> Loaded:
        image = load_image(path)
        display_size_ = display_size(image.size, min_side=1)  # only the pixel cap applies here
        display = image if display_size_ == image.size else image.resize(display_size_, Image.BILINEAR,
                                                                          reducing_gap=3.0)
        return cls(working_copy(image, max_side), display, (image.height, image.width))


def process_batch(model: WWbLModel, batch: list[tuple[Path, str]], args: argparse.Namespace,
                  failures: list[dict]) -> list[tuple[Path, str, Loaded, GroundingResult]]:
    """Load and run one batch; a failing image is reported and skipped (the batch is retried per image).
    Results are in the working copies' frames (see `in_frame`)."""
    loaded = []
    for path, stem in batch:
        try:
            loaded.append((path, stem, Loaded.from_file(path, args.max_side)))
        except ImageLoadError as error:
            report(failures, path, error)
    if not loaded:
        return []
    try:
        results = run_images(model, [item.work for _, _, item in loaded], args)
        return [(p, s, item, r) for (p, s, item), r in zip(loaded, results)]
    except (ValueError, RuntimeError) as error:
        if len(loaded) == 1:
            report(failures, loaded[0][0], error)
            return []
    return [done for item in loaded for done in process_batch(model, [item[:2]], args, failures)]


def report(failures: list[dict], path: Path, error: Exception) -> None:
    failures.append({"image": str(path), "error": f"{type(error).__name__}: {error}"})
    tqdm.write(f"skipped {path}: {error}", file=sys.stderr)


def summary_line(path: Path, result: GroundingResult) -> str:
    """`name: phrase score [x1, y1, x2, y2]; …` — what was found where."""
    found = "; ".join(f"{d.get('phrase', '')} {d['score']:.2f} {[round(v) for v in d['box']]}"
                      for d in result.detections.to_dicts())
    return f"{path.name}: {found or 'nothing found'}"


def run_batch(args: argparse.Namespace, items: list[tuple[Path, str]], failures: list[dict] | None = None) -> int:
    """Run the job over ``(path, output stem)`` items and write the outputs under ``args.out``;
    ``failures`` are inputs already refused (unreadable or special files), reported with the rest."""
    out = Path(args.out)
    try:
        check_output_folder(out)
    except OSError as error:
        print(f"error: cannot write into {str(out)!r} ({error.strerror or error})", file=sys.stderr)
        return 2
    try:
        args.device = resolve_device(args.device)
        coco_ids = CocoIds.from_ground_truth(args.coco_gt) if args.coco_gt else CocoIds()
        image_ids = {path: coco_ids.image_id(path, stem) for path, stem in items}
        model = build_model(args)
        if not args.phrase:
            model.load_captioner()  # missing BLIP weights fail before any image is processed
    except (FileNotFoundError, ValueError, KeyError) as error:  # MissingResourceError is a FileNotFoundError
        print(f"error: {error}", file=sys.stderr)
        return 2
    records = completed_records(out, items) if args.resume else {}
    pending = [item for item in items if item[0] not in records]
    refused, failures = list(failures or []), []
    with tqdm(total=len(pending), desc="images", unit="img", disable=args.quiet) as bar:
        for start in range(0, len(pending), args.batch_size):
            batch = pending[start:start + args.batch_size]
            try:
                results = process_batch(model, batch, args, failures)
            except MissingResourceError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            for path, stem, item, result in results:
                result = in_frame(result, item.size)  # one image's full-size heatmaps at a time
                records[path] = write_image_outputs(out, stem, item.display, result, str(path))
                if not args.quiet:
                    tqdm.write(summary_line(path, result))
            bar.update(len(batch))
    # In input order, whatever was resumed or retried: a resumed run ends with the same files.
    order = {str(path): k for k, (path, _) in enumerate(items)}
    failures = refused + sorted(failures, key=lambda failure: order[failure["image"]])
    coco = [entry for path, _ in items if path in records
            for entry in record_coco_records(records[path], image_ids[path], coco_ids)]
    write_coco_results(out / "coco_results.json", coco)
    write_text_atomic(out / "failures.json", json.dumps(failures, indent=2))
    kept = len(items) - len(pending)
    print(f"wrote {len(records) - kept} of {len(items) + len(refused)} inputs to {out}"
          + (f"; {kept} already complete there" if kept else "")
          + (f"; {len(failures)} failed (see failures.json)" if failures else ""))
    return 1 if failures else 0


def check_output_folder(out: Path) -> None:
    """OSError unless a file can be written in ``out`` (or, not there yet, in its nearest existing parent),
    leaving nothing behind; before any model loads. The parse-time check (``os.access``) tells root yes
    even where /proc, /sys or a read-only mount refuse files."""
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    with tempfile.TemporaryFile(dir=existing):
        pass


def completed_records(out: Path, items: list[tuple[Path, str]]) -> dict[Path, dict]:
    """The JSON records of the items whose outputs are already complete in ``out`` (``--resume``)."""
    records = {path: complete_record(out, stem, str(path)) for path, stem in items}
    return {path: record for path, record in records.items() if record is not None}
