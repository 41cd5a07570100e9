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
import os
import sys
from pathlib import Path

import wwbl.defaults as defaults
from wwbl.cli import (
    OneLineParser,
    add_box_rule_arguments,
    add_device_argument,
    add_pipeline_arguments,
    add_precision_argument,
    add_score_arguments,
    output_dir,
    positive_int,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# The small shapes-world models shipped with the repository: what runs when no model is named.
BUNDLED = Path(__file__).resolve().parent / "checkpoints"
BUNDLED_G, BUNDLED_BLIP = BUNDLED / "shapes_g", BUNDLED / "shapes_blip"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--image", action="append", required=True, help="image file, folder or glob (repeatable)")
    p.add_argument("--phrase", action="append", default=None, help="phrase to ground (repeatable); switches to WSG")
    p.add_argument("--checkpoint", default=None,
                   help="exported network g folder (python -m wwbl.export); none: the bundled shapes-world g")
    p.add_argument("--method", default="g", help="heatmap source: " + ", ".join(defaults.HEATMAP_SOURCES))
    p.add_argument("--clip-model", default=None, help="open_clip model (default: the one named in the export)")
    p.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag, e.g. openai (default: the export's; "
                                                        "ViT-B-32 openai for other methods without --clip-model); "
                                                        "'random' for untrained weights")
    p.add_argument("--clip-checkpoint", default=None, help="local CLIP weights")
    p.add_argument("--text-prefix", default=None, help="prefix for phrases entering CLIP (default: the export's)")
    p.add_argument("--captioner", default=None, help=f"BLIP: Hugging Face id or local folder (default: "
                                                     f"{defaults.DEFAULT_CAPTIONER}; the bundled shapes BLIP "
                                                     "with the bundled g)")
    p.add_argument("--iterative", action="store_true", help="WWbL without selective search (Appendix A)")
    add_box_rule_arguments(p)
    add_score_arguments(p)
    add_pipeline_arguments(p)
    add_device_argument(p)
    add_precision_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images processed together")
    p.add_argument("--out", type=output_dir, default="wwbl_output", help="output folder")
    p.add_argument("--coco-gt", default=None, help="COCO ground-truth JSON: coco_results.json takes its image ids "
                                                   "(by file name) and category ids (by phrase)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-image summary lines")
    return p.parse_args(argv)


def use_bundled_models(args: argparse.Namespace) -> str | None:
    """With no model named (g without ``--checkpoint``), the bundled shapes-world g and BLIP; the
    line that says so, or None."""
    if args.method != "g" or args.checkpoint is not None:
        return None
    args.checkpoint = str(BUNDLED_G)
    args.captioner = args.captioner or str(BUNDLED_BLIP)
    return (f"no model named: using the bundled shapes-world models ({BUNDLED_G}, its CLIP, {BUNDLED_BLIP}), "
            "which know only coloured shapes; name real ones with --checkpoint EXPORT_DIR --captioner BLIP")


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    note = use_bundled_models(args)
    try:
        paths = collect_images(args.image)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if note:
        print(note, file=sys.stderr)
    if args.quiet:  # before transformers loads: it reads this once (its weight-loading bars)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # torch, open_clip and transformers load only once the arguments are known to be usable.
    from wwbl.inference.batch import run_batch

    return run_batch(args, list(zip(paths, unique_stems(paths))))


if __name__ == "__main__":
    sys.exit(main())
