"""Put a Markdown block between the GPU-results markers of benchmarks/RESULTS.md (used by run_gpu.sh).

    python benchmarks/write_results.py BLOCK.md [--results benchmarks/RESULTS.md]

Everything between ``<!-- gpu-results:start -->`` and ``<!-- gpu-results:end -->`` is replaced by the
block's text; the rest of the file is left as it is. Both markers must be there, once each, in order.
"""
from __future__ import annotations

import argparse
from pathlib import Path

START, END = "<!-- gpu-results:start -->", "<!-- gpu-results:end -->"


def replace_block(document: str, block: str) -> str:
    """`document` with the text between the markers replaced by `block`."""
    if document.count(START) != 1 or document.count(END) != 1 or document.index(START) > document.index(END):
        raise ValueError(f"the results file needs exactly one {START} followed by one {END}")
    head, rest = document.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block.strip()}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("block", type=Path, help="the Markdown to put between the markers")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args()
    try:
        updated = replace_block(args.results.read_text(encoding="utf-8"), args.block.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SystemExit(f"write_results: {error}") from None
    args.results.write_text(updated, encoding="utf-8")
    print(f"wrote the GPU results into {args.results}")


if __name__ == "__main__":
    main()
