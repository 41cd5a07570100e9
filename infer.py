"""What is where by looking: boxes with phrases from images alone (WWbL), or for given phrases (WSG).

    python infer.py --image photos/ --checkpoint exported_g/ --out results/
    python infer.py --image "data/*.jpg" --phrase "a dog" --phrase "a red ball" --checkpoint exported_g/

Writes per image ``<name>.json``, ``<name>_overlay.png``, ``<name>_heatmap_<k>.png`` (phrase k) and
``<name>_heatmaps.npy``, plus ``coco_results.json`` for the run (ids from ``--coco-gt`` when given; see
wwbl.inference.coco_results) and ``failures.json`` listing skipped images. A bad image is
reported and skipped; the exit code is non-zero only if every image failed.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from tqdm import tqdm

from wwbl.errors import ImageLoadError, MissingResourceError
from wwbl.images import load_image
from wwbl.inference.api import WWbLModel, load
from wwbl.inference.captioner import DEFAULT_CAPTIONER
from wwbl.inference.options import (
    add_box_rule_arguments,
    add_pipeline_arguments,
    box_rule_from_args,
    pipeline_options_from_args,
)
from wwbl.inference.coco_results import CocoIds, coco_records, write_coco_results
from wwbl.inference.outputs import write_image_outputs

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", action="append", required=True, help="image file, folder or glob (repeatable)")
    p.add_argument("--phrase", action="append", default=None, help="phrase to ground (repeatable); switches to WSG")
    p.add_argument("--checkpoint", default=None, help="exported network g folder (python -m wwbl.export)")
    p.add_argument("--method", default="g", help="heatmap source: 'g' or a training-free extractor name")
    p.add_argument("--clip-model", default=None, help="open_clip model (default: the one named in the export)")
    p.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag, e.g. openai (default: the export's; "
                                                        "ViT-B-32 openai for other methods without --clip-model); "
                                                        "'random' for untrained weights")
    p.add_argument("--clip-checkpoint", default=None, help="local CLIP weights")
    p.add_argument("--text-prefix", default=None, help="prefix for phrases entering CLIP (default: the export's)")
    p.add_argument("--captioner", default=DEFAULT_CAPTIONER, help="BLIP: Hugging Face id or local folder")
    p.add_argument("--iterative", action="store_true", help="WWbL without selective search (Appendix A)")
    add_box_rule_arguments(p)
    add_pipeline_arguments(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8, help="images processed together")
    p.add_argument("--out", default="wwbl_output", help="output folder")
    p.add_argument("--coco-gt", default=None, help="COCO ground-truth JSON: coco_results.json takes its image ids "
                                                   "(by file name) and category ids (by phrase)")
    p.add_argument("--quiet", action="store_true", help="no per-image summary lines")
    return p.parse_args(argv)


def collect_images(specs: list[str]) -> list[Path]:
    """Files named by each spec (a file, every image file of a folder, or a glob), in order, unique."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found += sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"--image {spec!r} is neither a file, a folder nor a matching glob")
            found += matches
    return list(dict.fromkeys(found))


def unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        stems.append(path.stem if count == 0 else f"{path.stem}_{count}")
    return stems


def build_model(args: argparse.Namespace) -> WWbLModel:
    options = {} if args.text_prefix is None else {"text_prefix": args.text_prefix}
    clip = args.clip_model if args.clip_model or args.method != "g" else None
    return load(args.checkpoint, clip=clip, clip_pretrained=args.clip_pretrained,
                clip_checkpoint=args.clip_checkpoint, captioner=args.captioner, method=args.method,
                device=args.device, boxes=box_rule_from_args(args), options=pipeline_options_from_args(args),
                **options)


def run_images(model: WWbLModel, images: list, args: argparse.Namespace) -> list:
    if args.phrase:
        return model.ground_batch(images, [args.phrase] * len(images))
    if args.iterative:
        return model.detect_iterative(images)
    return model.detect_batch(images)


def process_batch(model: WWbLModel, batch: list[tuple[Path, str]], args: argparse.Namespace,
                  failures: list[dict]) -> list[tuple[Path, str, object, object]]:
    """Load and run one batch; a failing image is reported and skipped (the batch is retried per image)."""
    loaded = []
    for path, stem in batch:
        try:
            loaded.append((path, stem, load_image(path)))
        except ImageLoadError as error:
            report(failures, path, error)
    if not loaded:
        return []
    try:
        results = run_images(model, [img for _, _, img in loaded], args)
        return [(p, s, img, r) for (p, s, img), r in zip(loaded, results)]
    except (ValueError, RuntimeError) as error:
        if len(loaded) == 1:
            report(failures, loaded[0][0], error)
            return []
    return [done for item in loaded for done in process_batch(model, [item[:2]], args, failures)]


def report(failures: list[dict], path: Path, error: Exception) -> None:
    failures.append({"image": str(path), "error": f"{type(error).__name__}: {error}"})
    tqdm.write(f"skipped {path}: {error}", file=sys.stderr)


def summary_line(path: Path, result) -> str:
    """`name: phrase score [x1, y1, x2, y2]; …` — what was found where."""
    found = "; ".join(f"{d.get('phrase', '')} {d['score']:.2f} {[round(v) for v in d['box']]}"
                      for d in result.detections.to_dicts())
    return f"{path.name}: {found or 'nothing found'}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths = collect_images(args.image)
        coco_ids = CocoIds.from_ground_truth(args.coco_gt) if args.coco_gt else CocoIds()
        image_ids = {path: coco_ids.image_id(path, stem) for path, stem in zip(paths, unique_stems(paths))}
        model = build_model(args)
        if not args.phrase:
            model.load_captioner()  # missing BLIP weights fail before any image is processed
    except (FileNotFoundError, ValueError, KeyError) as error:  # MissingResourceError is a FileNotFoundError
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    items = list(zip(paths, unique_stems(paths)))
    coco, failures, written = [], [], 0
    with tqdm(total=len(items), desc="images", unit="img") as bar:
        for start in range(0, len(items), args.batch_size):
            batch = items[start:start + args.batch_size]
            try:
                results = process_batch(model, batch, args, failures)
            except MissingResourceError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            for path, stem, image, result in results:
                write_image_outputs(out, stem, image, result, str(path))
                if not args.quiet:
                    tqdm.write(summary_line(path, result))
                coco += coco_records(result, image_ids[path], coco_ids)
                written += 1
            bar.update(len(batch))
    write_coco_results(out / "coco_results.json", coco)
    (out / "failures.json").write_text(json.dumps(failures, indent=2))
    print(f"wrote {written} of {len(items)} images to {out}" + (f"; {len(failures)} failed" if failures else ""))
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
