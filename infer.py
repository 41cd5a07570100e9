"""What is where by looking: boxes with phrases from images alone (WWbL), or for given phrases (WSG).

    python infer.py --image photos/ --checkpoint exported_g/ --out results/
    python infer.py --image "data/*.jpg" --phrase "a dog" --phrase "a red ball" --checkpoint exported_g/

Writes per image ``<name>.json``, ``<name>_overlay.png``, ``<name>_heatmap_<k>.png`` (phrase k) and
``<name>_heatmaps.npy``, plus ``coco_results.json`` for the run (ids from ``--coco-gt`` when given; see
wwbl.inference.coco_results) and ``failures.json`` listing skipped images. A bad image is
reported and skipped (a special file, a dangling link or an unreadable one too): every input ends in
its outputs or in failures.json. Two inputs never share outputs (``a.png`` and ``a.jpg`` → ``a`` and
``a_1``; names over 100 bytes are cut and hashed); one file reached twice (a link, overlapping
globs) is processed once. A folder's files without an image suffix are not inputs (their count is
reported). Images larger than ``--max-side`` are processed downscaled, results in the original
frame. ``--resume`` skips images whose outputs are complete in ``--out`` (their ``<name>.json``,
written last and atomically, names that input, and the files it lists exist) and recomputes the
rest, so a killed run resumed with the same flags ends with the same files as one run through.
Exit status: 0 all written, 1 something failed, 2 a user error (one line on stderr).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys
from pathlib import Path

import wwbl.defaults as defaults
from wwbl.cli import (
    OneLineParser,
    add_box_rule_arguments,
    add_device_argument,
    add_max_side_argument,
    add_pipeline_arguments,
    add_precision_argument,
    add_score_arguments,
    output_dir,
    phrase_text,
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
    p.add_argument("--phrase", action="append", type=phrase_text, default=None, help="phrase to ground (repeatable); switches to WSG")
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
    add_max_side_argument(p)
    add_device_argument(p)
    add_precision_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images processed together")
    p.add_argument("--out", type=output_dir, default="wwbl_output", help="output folder")
    p.add_argument("--coco-gt", default=None, help="COCO ground-truth JSON: coco_results.json takes its image ids "
                                                   "(by file name) and category ids (by phrase)")
    p.add_argument("--resume", action="store_true",
                   help="skip images whose outputs in --out are complete (from an interrupted run with the same "
                        "flags); the run's coco_results.json and failures.json still cover every input")
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


def _problem(path: Path) -> str | None:
    """Why ``path`` cannot be an input image (None if it is a readable regular file)."""
    if path.is_symlink() and not path.exists():
        return "a dangling symbolic link"
    if not path.is_file():
        return "not a regular file (a FIFO, device or socket)"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def collect_images(specs: list[str]) -> tuple[list[Path], list[dict], list[str]]:
    """Files named by each spec (a file, every image file of a folder, or a glob), in order, each file
    once (by its real path), the items that cannot be read, each with its reason (they go to
    failures.json, never lost), and notes on what a folder held that is not an input.
    FileNotFoundError if a spec names nothing at all."""
    found: dict[str, Path] = {}
    problems: list[dict] = []
    notes: list[str] = []

    def take(path: Path) -> None:
        reason = _problem(path)
        if reason:
            problems.append({"image": str(path), "error": reason})
        else:
            found.setdefault(os.path.realpath(path), path)

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            try:
                entries = sorted(path.iterdir())
            except OSError as error:  # e.g. a folder without read permission
                problems.append({"image": str(path), "error": f"cannot list the folder: {error.strerror}"})
                continue
            files = [e for e in entries if not e.is_dir()]
            others = [e for e in files if e.suffix.lower() not in IMAGE_SUFFIXES]
            for entry in files:
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    take(entry)
            if others:
                notes.append(f"{path}: {len(others)} file(s) without an image suffix not taken "
                             f"(e.g. {others[0].name})")
        elif path.exists() or path.is_symlink():
            take(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            matches = [m for m in matches if not m.is_dir()]  # `**` also lists the files inside them
            if not matches:
                raise FileNotFoundError(f"--image {spec!r} is neither a file, a folder nor a matching glob")
            for match in matches:
                take(match)
    return list(found.values()), problems, notes


# Longer stems (in UTF-8 bytes) are cut, plus a hash, so that every output name (the stem and at most
# ~25 bytes: "_heatmap_<k>.png", ".<stem>.json.partial") stays under the file-system limit of 255 bytes.
MAX_STEM = 100


def _cut(stem: str, max_bytes: int) -> str:
    """``stem`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character."""
    return stem.encode()[:max_bytes].decode(errors="ignore")


def unique_stems(paths: list[Path]) -> list[str]:
    """One output stem per input, never shared: the file's stem, cut to MAX_STEM UTF-8 bytes (with an
    8-hex hash of the full name) when longer, and ``_<n>`` appended when another input already took it."""
    taken: set[str] = set()
    stems = []
    for path in paths:
        stem = path.stem
        if len(stem.encode()) > MAX_STEM:
            stem = f"{_cut(stem, MAX_STEM)}_{hashlib.sha1(path.name.encode()).hexdigest()[:8]}"
        candidate, n = stem, 0
        while candidate in taken:
            n += 1
            candidate = f"{stem}_{n}"
        taken.add(candidate)
        stems.append(candidate)
    return stems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    note = use_bundled_models(args)
    try:
        paths, problems, notes = collect_images(args.image)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in notes:
        print(line, file=sys.stderr)
    for problem in problems:
        print(f"skipped {problem['image']}: {problem['error']}", file=sys.stderr)
    if note:
        print(note, file=sys.stderr)
    if args.quiet:  # before transformers loads: it reads this once (its weight-loading bars)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # torch, open_clip and transformers load only once the arguments are known to be usable.
    from wwbl.inference.batch import run_batch

    return run_batch(args, list(zip(paths, unique_stems(paths))), problems)


if __name__ == "__main__":
    sys.exit(main())
