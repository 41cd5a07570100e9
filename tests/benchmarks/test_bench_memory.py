"""bench_memory.py's core: each child's own peak RSS and status, the address-space cap, the pixel guard,
the synthetic photos and the table; end to end on infer.py under -m slow."""
import sys
from pathlib import Path

import pytest
from bench_memory import (Measurement, Run, main, measure, measure_run, photo_format, plan, synthetic_photo, table,
                          write_photo)
from PIL import Image

MIB = 1 << 20
# A child that touches N MiB (bytearray pages are written, so they are resident) and exits.
TOUCH = "import sys; block = bytearray(int(sys.argv[1]) << 20); block[::4096] = b'x' * len(block[::4096])"


def _touch(mib: int) -> list[str]:
    return [sys.executable, "-c", TOUCH, str(mib)]


def test_peak_rss_is_each_childs_own():
    _, small, _ = measure(_touch(10))
    code, big, wall = measure(_touch(300))
    _, small_after_big, _ = measure(_touch(10))
    assert code == 0 and wall > 0
    assert big - small >= 280 * MIB  # the 300 MiB block shows in that child's figure
    assert small_after_big < small + 50 * MIB  # and in no later child's (RUSAGE_CHILDREN would keep it)
    # Nor this (torch-loaded) test process's own: a bare interpreter plus 10 MiB is well under 100 MiB.
    assert small < 100 * MIB


def test_the_address_space_cap_stops_the_child_not_the_machine():
    code, _, _ = measure(_touch(1024), cap_bytes=512 * MIB)
    assert code != 0  # MemoryError in the child
    assert measure(_touch(10), cap_bytes=512 * MIB)[0] == 0


def test_raised_bound_runs_above_the_pixel_guard_are_not_started(tmp_path: Path):
    run = Run(tmp_path / "12000x9000.jpg", (12000, 9000), "wsg", "none")  # no such file: nothing may run
    m = measure_run(run, tmp_path, None, None, unbounded_max_pixels=50_000_000)
    assert m.status.startswith("not run: 108 Mpx") and m.peak_rss_bytes is None


@pytest.mark.parametrize("size", [(300, 200), (2, 400), (500, 2)])
def test_synthetic_photos_have_the_asked_size_and_shapes(tmp_path: Path, size):
    for fmt in ("jpg", "png"):
        with Image.open(write_photo(tmp_path, *size, fmt)) as image:
            assert image.size == size and image.mode == "RGB"
    red = synthetic_photo(400, 300).getpixel((400 // 8 + 30, 300 // 8 + 30))  # inside the disc
    assert red == (220, 30, 30)


def test_the_grid_and_its_table(tmp_path: Path):
    runs = plan([(tmp_path / "8x6.png", (8, 6))], ["wwbl", "wsg"], "4000")
    assert [(r.mode, r.max_side) for r in runs] == [("wwbl", "default"), ("wwbl", "4000"), ("wsg", "default"),
                                                    ("wsg", "4000")]
    text = table([(runs[0], Measurement("ok", 3 * MIB, 1.25)), (runs[1], Measurement("exit 1: a|b", None, None))])
    assert text.splitlines()[2] == "| 8×6 | png | wwbl | default (1600) | ok | 3 | 1.2 |"
    assert text.splitlines()[3] == "| 8×6 | png | wwbl | 4000 | exit 1: a/b | - | - |"


@pytest.mark.slow  # two infer.py processes loading the bundled models: tens of seconds
def test_end_to_end_on_a_small_image(tmp_path: Path, capsys):
    markdown = tmp_path / "results.md"
    assert main(["--sizes", "64x48", "--formats", "png", "--modes", "wsg", "--raised-max-side", "32",
                 "--markdown", str(markdown), "--threads", "1"]) == 0
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| 64×48")]
    assert len(rows) == 2 and all("| ok |" in row for row in rows)
    assert all(float(row.split("|")[6]) > 50 for row in rows)  # torch and the models: well over 50 MiB


def test_a_side_past_jpegs_limit_is_written_as_png(tmp_path):
    assert photo_format(65501, 2, "jpg") == "png"
    assert photo_format(65500, 2, "jpg") == "jpg" and photo_format(9, 9, "png") == "png"
    path = write_photo(tmp_path, 70000, 2, "jpg")
    assert path.suffix == ".png" and Image.open(path).size == (70000, 2)
