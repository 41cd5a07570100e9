"""Peak memory and wall time of ``infer.py`` on large images: what the working-resolution bound buys.

    python benchmarks/bench_memory.py                      # the default grid (see --help), table on stdout
    python benchmarks/bench_memory.py --markdown benchmarks/RESULTS.md --threads 4
    python benchmarks/bench_memory.py --sizes 3000x2000 --formats jpg --modes wsg   # a small smoke run

Writes synthetic photos (smooth gradients with a few coloured shapes, so the bundled shapes-world models
have something to find) of each ``--sizes`` in each ``--formats`` to a temporary folder, then runs
``python infer.py --image IMG --out DIR`` on each, in a fresh process, with the bundled models (no model
named) and HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1: WWbL (no phrase) and WSG (``--phrase`` twice), with
the default ``--max-side`` and with ``--max-side`` raised to ``--raised-max-side`` (default ``none``: no
bound). One Markdown row per run: status, the child's peak resident memory and its wall time.

Peak RSS is the child's own: each ``infer.py`` is forked from a tiny wrapper (a bare interpreter, about
10 MB resident, which is all a figure can carry of another process) that reaps it with ``os.wait4``, the
resource usage of that one process (``getrusage(RUSAGE_CHILDREN)`` would give the maximum over every child
so far, and a child forked from this script would count the script's own memory). It is Linux's
``ru_maxrss`` (KiB). Guarding a shared machine:

* ``--cap-gib`` (default 12) limits each child's address space (``resource.setrlimit(RLIMIT_AS)`` in the
  child before ``infer.py`` starts): an allocation past it fails inside the child, which ``infer.py``
  reports (its status is shown) instead of the machine swapping or the OOM killer choosing a victim.
  Address space counts reservations too (torch maps a few GiB it never touches), so the cap is not the
  peak RSS a run may reach; ``--cap-gib 0`` removes it.
* ``--unbounded-max-pixels`` (default 50 million): a raised-bound run of a larger image is not started
  and its row says so; by default the 12000×9000 image runs only with the default bound.

The parent holds one image at a time while writing it (about 7 bytes a pixel, 0.8 GB at 12000×9000) and
nothing while the children run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
INFER = ROOT / "infer.py"
DEFAULT_SIZES = "12000x9000,8000x6000,100000x2,2x4000"
WSG_PHRASES = ("a red circle", "a blue square")
GIB = 1 << 30


@dataclass(frozen=True)
class Run:
    """One ``infer.py`` invocation of the grid."""

    image: Path
    size: tuple[int, int]  # width, height
    mode: str  # "wwbl" or "wsg"
    max_side: str  # "default" or the value passed to --max-side


@dataclass(frozen=True)
class Measurement:
    status: str
    peak_rss_bytes: int | None
    wall_s: float | None


# ----------------------------------------------------------------------------- images


def _ramp(length: int) -> np.ndarray:
    return (np.arange(length, dtype=np.int64) * 255 // max(1, length - 1)).astype(np.uint8)


def synthetic_photo(width: int, height: int) -> Image.Image:
    """A ``width×height`` RGB image: colour gradients with a red disc and a blue square (uint8 throughout:
    the array, one channel's temporary and PIL's copy, about 7 bytes a pixel)."""
    x, y = _ramp(width)[None, :], _ramp(height)[:, None]
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[..., 0] = x // 2 + y // 4 + 40
    pixels[..., 1] = y // 2 + 60
    pixels[..., 2] = 255 - x // 3 - y // 3
    image = Image.fromarray(pixels)
    del pixels
    draw = ImageDraw.Draw(image)
    side = max(1, min(width, height) // 4)
    draw.ellipse([width // 8, height // 8, width // 8 + side, height // 8 + side], fill=(220, 30, 30))
    draw.rectangle([width // 2, height // 2, width // 2 + side, height // 2 + side], fill=(30, 40, 210))
    return image


# JPEG cannot store a side longer than this: such a photo is written as PNG instead.
JPEG_MAX_SIDE = 65500


def photo_format(width: int, height: int, fmt: str) -> str:
    return "png" if fmt == "jpg" and max(width, height) > JPEG_MAX_SIDE else fmt


def write_photo(folder: Path, width: int, height: int, fmt: str) -> Path:
    """The synthetic photo saved as ``<width>x<height>.<fmt>`` (JPEG quality 90 or PNG level 1; PNG
    whatever ``fmt`` for a side over JPEG's limit)."""
    fmt = photo_format(width, height, fmt)
    path = folder / f"{width}x{height}.{fmt}"
    image = synthetic_photo(width, height)
    if fmt == "jpg":
        image.save(path, quality=90)
    else:
        image.save(path, compress_level=1)
    return path


# ----------------------------------------------------------------------------- measuring one child


# The wrapper between this script and each measured command: a bare interpreter (no site, ~10 MB) that
# caps the address space, forks and execs the command, and writes its exit code, peak RSS and wall time.
# A child's ru_maxrss counts what its parent had resident when it forked (Linux records the old image's
# high-water mark at exec), so the command is forked from this small process rather than from the script.
_WRAPPER = """
import json, os, resource, sys, time
report, cap, command = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        if cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.execv(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)  # this child's own resource usage
with open(report, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "peak_kib": usage.ru_maxrss,
               "wall_s": time.perf_counter() - start}, f)
"""


def measure(command: list[str], cap_bytes: int | None = None, env: dict[str, str] | None = None,
            log: Path | None = None) -> tuple[int, int, float]:
    """Run ``command`` (its first item an executable path) through the wrapper; ``(exit status, its peak
    RSS in bytes, wall seconds)``. ``cap_bytes`` limits its address space; its output goes to ``log``."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        wrapper = [sys.executable, "-S", "-c", _WRAPPER, str(report), str(cap_bytes or 0), *command]
        with open(log or os.devnull, "wb") as sink:
            subprocess.run(wrapper, stdout=sink, stderr=subprocess.STDOUT, env=env, check=True)
        result = json.loads(report.read_text())
    return result["code"], result["peak_kib"] * 1024, result["wall_s"]


def infer_command(run: Run, out: Path) -> list[str]:
    command = [sys.executable, str(INFER), "--image", str(run.image), "--out", str(out), "--quiet"]
    if run.mode == "wsg":
        for phrase in WSG_PHRASES:
            command += ["--phrase", phrase]
    if run.max_side != "default":
        command += ["--max-side", run.max_side]
    return command


def child_env(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _failure(out: Path, log: Path) -> str:
    """What infer.py said went wrong: its failures.json entry, else the log's last line."""
    try:
        failures = json.loads((out / "failures.json").read_text())
        if failures:
            return " ".join(str(failures[0].get("error", failures[0])).split())[:120]
    except (OSError, ValueError, AttributeError):
        pass
    lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
    return lines[-1][:120] if lines else "no output"


def measure_run(run: Run, work: Path, cap_bytes: int | None, threads: int | None,
                unbounded_max_pixels: int) -> Measurement:
    """One row: skipped by the pixel guard, or ``infer.py`` measured (its outputs then removed)."""
    pixels = run.size[0] * run.size[1]
    if run.max_side != "default" and pixels > unbounded_max_pixels:
        return Measurement(f"not run: {pixels / 1e6:.0f} Mpx > --unbounded-max-pixels", None, None)
    out = work / f"out_{run.image.stem}_{run.image.suffix[1:]}_{run.mode}_{run.max_side}"
    log = out.with_suffix(".log")
    code, peak, wall = measure(infer_command(run, out), cap_bytes, child_env(threads), log)
    if code == 0:
        status = "ok"
    elif code < 0:
        status = f"killed by signal {-code}"
    else:
        status = f"exit {code}: {_failure(out, log)}"
    shutil.rmtree(out, ignore_errors=True)
    return Measurement(status, peak, wall)


# ----------------------------------------------------------------------------- the grid and its table


def parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)


def plan(images: list[tuple[Path, tuple[int, int]]], modes: list[str], raised: str) -> list[Run]:
    return [Run(path, size, mode, max_side) for path, size in images for mode in modes
            for max_side in ("default", raised)]


def table(rows: list[tuple[Run, Measurement]]) -> str:
    lines = ["| image | format | mode | --max-side | status | peak RSS (MiB) | wall (s) |",
             "| --- | --- | --- | --- | --- | ---: | ---: |"]
    for run, m in rows:
        rss = f"{m.peak_rss_bytes / (1 << 20):.0f}" if m.peak_rss_bytes is not None else "-"
        wall = f"{m.wall_s:.1f}" if m.wall_s is not None else "-"
        side = "default (1600)" if run.max_side == "default" else run.max_side
        status = m.status.replace("|", "/")
        lines.append(f"| {run.size[0]}×{run.size[1]} | {run.image.suffix[1:]} | {run.mode} | {side} | {status} "
                     f"| {rss} | {wall} |")
    return "\n".join(lines)


def header(args: argparse.Namespace) -> str:
    cap = f"{args.cap_gib:g} GiB address space" if args.cap_gib else "no cap"
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | {platform.machine()} | {os.cpu_count()} CPUs | "
            f"threads {args.threads or 'default'} | per-run cap: {cap} | raised-bound runs up to "
            f"{args.unbounded_max_pixels / 1e6:g} Mpx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES, type=lambda t: [parse_size(s) for s in t.split(",")],
                   help=f"comma-separated WIDTHxHEIGHT (default {DEFAULT_SIZES})")
    p.add_argument("--formats", default="jpg,png", type=lambda t: t.split(","), help="jpg and/or png")
    p.add_argument("--modes", default="wwbl,wsg", type=lambda t: t.split(","), help="wwbl and/or wsg")
    p.add_argument("--raised-max-side", default="none", help="the raised bound: a number of pixels or 'none'")
    p.add_argument("--cap-gib", type=float, default=12.0, help="each child's address-space cap; 0 = none")
    p.add_argument("--unbounded-max-pixels", type=float, default=50e6,
                   help="raised-bound runs only for images of at most this many pixels")
    p.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of each child (default: torch's)")
    p.add_argument("--markdown", type=Path, default=None, help="append the header and table to this file")
    p.add_argument("--keep", type=Path, default=None, help="write images and logs here and keep them")
    args = p.parse_args(argv)
    if set(args.formats) - {"jpg", "png"} or set(args.modes) - {"wwbl", "wsg"}:
        p.error("--formats takes jpg,png and --modes wwbl,wsg")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    cap = int(args.cap_gib * GIB) if args.cap_gib else None
    try:
        wanted = dict.fromkeys((w, h, photo_format(w, h, fmt)) for w, h in args.sizes for fmt in args.formats)
        images = [(write_photo(work, w, h, fmt), (w, h)) for w, h, fmt in wanted]
        rows = []
        for run in plan(images, args.modes, args.raised_max_side):
            rows.append((run, measure_run(run, work, cap, args.threads, int(args.unbounded_max_pixels))))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report = f"{header(args)}\n\n{table(rows)}\n"
    print(f"\n{report}")
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as f:
            f.write(f"\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
