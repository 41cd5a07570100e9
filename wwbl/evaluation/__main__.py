"""``python -m wwbl.evaluation {wsg,wwbl,wsol,masks,tables} …`` — see ``wwbl.evaluation.evaluate``.

Examples::

    python -m wwbl.evaluation wsg --dataset flickr30k --root data/flickr30k --checkpoint checkpoints/g --out runs/g_flickr
    python -m wwbl.evaluation wsg --dataset zsg_vg_s0 --root data/zsg --method adapting_clip --clip-model ViT-L-14 --out runs/ac_vg_s0
    python -m wwbl.evaluation wwbl --dataset flickr30k --root data/flickr30k --checkpoint checkpoints/g --out runs/wwbl
    python -m wwbl.evaluation wsol --dataset imagenet --root data/imagenet --method vl_score --clip-model RN50 --out runs/vl
    python -m wwbl.evaluation masks --dataset cocoglide --root data --method gem --closing 51 --out runs/gem
    python -m wwbl.evaluation tables runs/ --out runs/tables

Exit status: 0 evaluated (items the benchmark's files describe badly are skipped and listed in
``skipped.json``), 2 a user error: bad settings, a missing file or a malformed whole annotation file
(one line on stderr naming the file and the entry).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import wwbl.defaults as defaults
from wwbl.cli import (
    OneLineParser,
    add_box_rule_arguments,
    add_device_argument,
    add_max_side_argument,
    add_pipeline_arguments,
    add_score_arguments,
    positive_int,
    unit_float,
)


def _none_or(text: str) -> str | None:
    return None if text.lower() in ("none", "null", "") else text


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="benchmark name, e.g. flickr30k, referit, vg, zsg_flickr_s1, cub")
    parser.add_argument("--root", required=True, help="dataset directory in its publisher's layout")
    parser.add_argument("--split", default="test")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="exported network g directory (wwbl.export)")
    source.add_argument("--method", help="registered extractor: " + ", ".join(defaults.HEATMAP_SOURCES[1:]))
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--clip-pretrained", default="openai", type=_none_or, help="open_clip tag; 'none' with --clip-checkpoint; 'random' for untrained weights")
    parser.add_argument("--clip-checkpoint", default=None, help="local CLIP weights instead of a pretrained tag")
    add_device_argument(parser)
    parser.add_argument("--out", required=True, help="run directory (records, results, tables); rerun to resume")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    parser.add_argument("--text-prefix", default=None,
                        help="prefix the extractor adds to phrases (default: its own, an export's for g; "
                             "none in wwbl, as the reference queried g with raw captions)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="extractor option")
    parser.add_argument("--loader-option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset loader option, e.g. min_area_fraction=null, text_prefix='image of '")
    parser.add_argument("--boxes", default="auto", choices=("auto", "wsg", "wsol", "method"))
    add_box_rule_arguments(parser)
    parser.add_argument("--iou-threshold", type=unit_float, default=0.5)
    parser.add_argument("--label", default=None, help="row name in the tables")
    parser.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m wwbl.evaluation", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Evaluate network g or a training-free extractor on the papers' "
                                                 "benchmarks and write their tables (Markdown, CSV, JSON).")
    sub = parser.add_subparsers(dest="command", required=True)
    wsg = sub.add_parser("wsg", help="weakly supervised grounding (pointing, bbox accuracy, Acc@thr)")
    wwbl = sub.add_parser("wwbl", help="what is where by looking (WWbL metric)")
    wsol = sub.add_parser("wsol", help="WSOL: GT-known, top-1/top-5 localisation")
    masks = sub.add_parser("masks", help="mask localisation: mean IoU sweep and PxAP")
    for p in (wsg, wwbl, wsol, masks):
        _common(p)
    for p in (wsg, wwbl):
        add_score_arguments(p, off_by_default=True)
        p.add_argument("--gt-mode", default="union", choices=("union", "any"), help="pointing: union GT box or any box")
        p.add_argument("--pointing-ties", default=defaults.POINTING_TIES[0], choices=defaults.POINTING_TIES,
                       help="pointing: of several maximal pixels (a flat top), the one deepest inside the thickest "
                            "flat top, or the first in row-major order (released code)")
    wsg.add_argument("--acc-threshold", type=float, default=None, help="Acc@thr (default ZSGNet: 0.5 Flickr, 0.3 VG)")
    wsg.add_argument("--entity-average", default="normalised", choices=("normalised", "raw"),
                     help="Flickr entity map: mean of min-max-normalised phrase maps (default) or of raw maps, "
                          "normalised after (released code)")
    wsg.add_argument("--box-resolution", default="original", choices=("original", "model"),
                     help="cut boxes from the map at the original image size (default) or at the method's "
                          "input size S and scale them (released code)")
    wwbl.add_argument("--predictions", default=None, help="JSON-lines predictions instead of running the pipeline")
    wwbl.add_argument("--captioner", default=None, help="BLIP source for the pipeline")
    wwbl.add_argument("--match-prefix", default=None, help="GT text prefix for matching (default: reference's)")
    wwbl.add_argument("--drop-empty", action="store_true",
                      help="exclude images without predictions (the reference) instead of counting misses")
    add_pipeline_arguments(wwbl)
    add_max_side_argument(wwbl)
    for p in (wsol, masks):
        p.add_argument("--prompt", default="an image of a {}.",
                       help="text template, {} = class / label; without {} used as is (the WWbL reference "
                            "localised 'bird' / 'car' / 'dog' on CUB / Cars / Dogs)")
    wsol.add_argument("--first-name-only", action="store_true", help="use only a class's first name, not all synonyms")
    wsol.add_argument("--no-classify", action="store_true", help="skip zero-shot top-1/top-5 localisation")
    wsol.add_argument("--class-prompt", default="an image of a {}.",
                      help="zero-shot classification template (VL-Score: 'an image of a {}.', synonyms averaged)")
    wsol.add_argument("--strict", action="store_true", help="IoU > threshold (VL-Score's wording) instead of >=")
    wsol.add_argument("--wsol-iou-area", default="continuous", choices=("continuous", "inclusive"),
                      help="IoU areas: continuous (default) or pixel-inclusive (x2-x1+1)(y2-y1+1) (released code)")
    masks.add_argument("--closing", type=int, default=1, help="dilation-then-erosion kernel size (poster: 41-61)")
    tables = sub.add_parser("tables", help="merge several runs into the papers' tables")
    tables.add_argument("runs", nargs="+", help="run directories or results.json files")
    tables.add_argument("--out", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torch, open_clip and the readers load only once the arguments parse (--help answers at once).
    from wwbl.devices import resolve_device
    from wwbl.evaluation.evaluate import run_evaluation, settings_from_args
    from wwbl.evaluation.tables import merge_runs

    try:
        if args.command == "tables":
            merge_runs(args.runs, args.out)
            return 0
        args.device = str(resolve_device(args.device))
        settings = settings_from_args(args)
        results = run_evaluation(settings)
    except (ValueError, OSError) as err:  # bad settings, malformed annotations, missing or unreadable files
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # one line, whatever the message
        return 2
    print(f"{results['images']}/{results['images_total']} images evaluated, {results['skipped']} skipped "
          f"(see {settings.out}/skipped.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
