"""The evaluation with malformed annotation files reports and skips the item, and never counts an item
twice nor scores a stale one on resume.

A placed extractor makes every metric known in advance: the map of a phrase starting with "hit" is
its GT box (pointing and box accuracy 1), of any other phrase a block away from every GT box (0), so
pointing = bbox accuracy = hits / scored items, counted here from the fixture, not from the code.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.helpers.flickr30k import write_flickr30k
from wwbl.evaluation.__main__ import main
from wwbl.evaluation.evaluate import EvalSettings, run_evaluation
from wwbl.extractors.base import HeatmapExtractor

WIDTH, HEIGHT = 64, 48
BOXES = ([2, 2, 30, 22], [4, 4, 24, 20])  # an image's first and second entity
MISS_BLOCK = (40, 30, 62, 46)  # x1, y1, x2, y2: overlaps no GT box
# image id → {entity: phrase}
SPEC = {
    "1": {"11": "hit one"},
    "2": {"21": "miss two", "22": "hit two"},
    "3": {"31": "hit three"},
    "4": {"41": "miss four"},
    "5": {"51": "hit five", "52": "miss five"},
    "6": {"61": "hit six"},
}


def _images(spec: dict) -> dict:
    return {i: {e: (BOXES[k], text) for k, (e, text) in enumerate(entities.items())} for i, entities in spec.items()}


def _expected(spec: dict, left_out: set[str] = frozenset()) -> tuple[int, float]:
    """(items, pointing) of ``spec`` without the ``left_out`` item ids (``image/entity``), by hand."""
    phrases = [text for i, ents in spec.items() for e, text in ents.items() if f"{i}/{e}" not in left_out]
    return len(phrases), sum(p.startswith("hit") for p in phrases) / len(phrases)


class PlacedExtractor(HeatmapExtractor):
    """Maps at the image's size: a "hit …" phrase lights its GT box, any other phrase ``MISS_BLOCK``."""

    def __init__(self, clip, fail_on_call: int | None = None):
        super().__init__(clip)
        self.calls, self.fail_on_call = 0, fail_on_call

    def heatmaps(self, images, phrases):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # stands for a kill: nothing of this batch is written
        out = []
        for image, names in zip(images, phrases):
            maps = torch.zeros(len(names), image.height, image.width)
            for k, name in enumerate(names):
                x1, y1, x2, y2 = _box_of(name) if name.startswith("hit") else MISS_BLOCK
                maps[k, y1:y2, x1:x2] = 1.0
            out.append(maps)
        return out

    def _heatmaps_square(self, images, text_emb, image_index, phrases):
        raise AssertionError("not used")


def _box_of(phrase: str) -> list[int]:
    for entities in CURRENT_SPEC.values():
        for k, text in enumerate(entities.values()):
            if text == phrase:
                return BOXES[k]
    raise KeyError(phrase)


CURRENT_SPEC: dict = {}  # the spec the extractor looks GT boxes up in (set by each test)


@pytest.fixture(autouse=True)
def _spec():
    CURRENT_SPEC.clear()
    CURRENT_SPEC.update(json.loads(json.dumps(SPEC)))
    yield
    CURRENT_SPEC.clear()


def _settings(root: Path, out: Path, **changes) -> EvalSettings:
    return EvalSettings(task="wsg", dataset="flickr30k", root=str(root), out=str(out), method="placed",
                        batch_size=2, progress=False, **changes)


def _evaluate(root: Path, out: Path, clip, **changes) -> dict:
    return run_evaluation(_settings(root, out), extractor=PlacedExtractor(clip, **changes))


def _lines(out: Path) -> list[str]:
    return (out / "records.jsonl").read_bytes().decode("utf-8", errors="replace").splitlines()


# ----------------------------------------------------------------------------- malformed items


def test_malformed_items_are_reported_and_the_rest_is_scored(tmp_path: Path, tiny_clip) -> None:
    root = tmp_path / "flickr"
    write_flickr30k(root, _images(SPEC), (WIDTH, HEIGHT))
    (root / "Annotations" / "3.xml").write_text("")                       # empty per-image file
    (root / "Sentences" / "4.txt").write_bytes(b"[/EN#41/other a \xff] .\n")  # not UTF-8
    xml = (root / "Annotations" / "5.xml").read_text()                    # entity 52: NaN box
    (root / "Annotations" / "5.xml").write_text(xml.replace("<xmin>5</xmin>", "<xmin>nan</xmin>"))
    xml = (root / "Annotations" / "6.xml").read_text()                    # entity 61: wholly right of the image
    for tag, value in (("xmin", 3), ("xmax", 31)):
        xml = xml.replace(f"<{tag}>{value}</{tag}>", f"<{tag}>{value + 100}</{tag}>")
    (root / "Annotations" / "6.xml").write_text(xml)
    (root / "test.txt").write_text("1\n2\n3\n4\n5\n6\n2\n")                # image 2 listed twice
    results = _evaluate(root, tmp_path / "run", tiny_clip)

    items, pointing = _expected(SPEC, left_out={"3/31", "4/41", "5/52", "6/61"})
    assert (items, pointing) == (4, 0.75)
    assert results["metrics"]["items"] == items
    assert results["metrics"]["pointing"] == pytest.approx(pointing)
    assert results["metrics"]["bbox_acc"] == pytest.approx(pointing)
    assert (results["images"], results["images_total"]) == (3, 4)  # 1, 2, 5 scored; 6 has no item left
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert len(skipped) == results["skipped"] == 6
    assert [line.split(":")[0] for line in skipped] == ["3", "4", "5/52", "2", "2", "6"]
    assert sum("duplicate" in line for line in skipped) == 2  # both of image 2's entities, once each
    assert "lies outside the 64x48 image" in skipped[-1]


# ----------------------------------------------------------------------------- resume


def _base(tmp_path: Path) -> Path:
    """The fixture with two problems kept across runs: a corrupt image (7) and an item whose GT box lies
    outside its image (5/52, beside a good item)."""
    root = tmp_path / "flickr"
    write_flickr30k(root, _images(SPEC), (WIDTH, HEIGHT))
    xml = (root / "Annotations" / "5.xml").read_text()
    (root / "Annotations" / "5.xml").write_text(xml.replace("<ymin>5</ymin>", "<ymin>60</ymin>")
                                                .replace("<ymax>21</ymax>", "<ymax>90</ymax>"))
    (root / "Annotations" / "7.xml").write_text((root / "Annotations" / "1.xml").read_text())
    (root / "Sentences" / "7.txt").write_text("[/EN#11/other hit seven] .\n")
    (root / "flickr30k_images" / "7.jpg").write_bytes(b"not a jpeg")
    (root / "test.txt").write_text("1\n2\n3\n4\n5\n6\n7\n")
    return root


BASE_LEFT_OUT = {"5/52"}


def _truncate_last_line(out: Path, root: Path) -> None:
    data = (out / "records.jsonl").read_bytes()
    (out / "records.jsonl").write_bytes(data[: len(data) - 40])  # a kill in the middle of the last write


def _damage_first_line(out: Path, root: Path) -> None:
    lines = (out / "records.jsonl").read_bytes().split(b"\n")
    (out / "records.jsonl").write_bytes(b"\n".join([b"\xff\xfe{\"key\": \"1\"", *lines[1:]]))


def _duplicate_lines(out: Path, root: Path) -> None:
    lines = _lines(out)
    (out / "records.jsonl").write_text("\n".join(lines + lines[:2]) + "\n")


def _drop_fingerprints(out: Path, root: Path) -> None:  # records written before fingerprints existed
    records = [json.loads(line) for line in _lines(out)]
    (out / "records.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "inputs"}) + "\n"
                                               for r in records))


RESUMES: dict[str, Callable[[Path, Path], None]] = {
    "nothing changed": lambda out, root: None,
    "last line cut short": _truncate_last_line,
    "first line damaged": _damage_first_line,
    "lines repeated": _duplicate_lines,
    "records without fingerprints": _drop_fingerprints,
}


@pytest.mark.parametrize("damage", RESUMES)
def test_resume_gives_the_results_of_one_run(tmp_path: Path, tiny_clip, damage: str) -> None:
    root = _base(tmp_path)
    one = _evaluate(root, tmp_path / "one", tiny_clip)
    items, pointing = _expected(SPEC, BASE_LEFT_OUT)
    assert one["metrics"]["items"] == items and one["metrics"]["pointing"] == pytest.approx(pointing)

    out = tmp_path / "resumed"
    _evaluate(root, out, tiny_clip)
    RESUMES[damage](out, root)
    again = _evaluate(root, out, tiny_clip)
    assert again["metrics"] == one["metrics"] and again["images"] == one["images"] == 6
    assert (out / "skipped.json").read_text() == (tmp_path / "one" / "skipped.json").read_text()
    # A third run finds everything done and appends nothing.
    lines = _lines(out)
    extractor = PlacedExtractor(tiny_clip)
    run_evaluation(_settings(root, out), extractor=extractor)
    assert _lines(out) == lines and extractor.calls == 0


def test_a_cut_line_is_removed_before_the_next_record_is_appended(tmp_path: Path, tiny_clip) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    _evaluate(root, out, tiny_clip)
    before = _lines(out)
    _truncate_last_line(out, root)
    _evaluate(root, out, tiny_clip)
    after = _lines(out)
    assert after[:-1] == before[:-1] and json.loads(after[-1])["key"] == json.loads(before[-1])["key"]


def test_a_record_cut_just_before_its_newline_is_kept(tmp_path: Path, tiny_clip) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    _evaluate(root, out, tiny_clip)
    before = _lines(out)
    (out / "records.jsonl").write_text("\n".join(before))  # the whole last record, without "\n"
    extractor = PlacedExtractor(tiny_clip)
    run_evaluation(_settings(root, out), extractor=extractor)
    assert extractor.calls == 0 and _lines(out) == before


def test_kill_between_batches_then_resume(tmp_path: Path, tiny_clip) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _evaluate(root, out, tiny_clip, fail_on_call=2)  # batch 1 (images 1, 2) written, then killed
    assert [json.loads(line)["key"] for line in _lines(out)] == ["1", "2"]
    assert not (out / "results.json").exists()
    resumed = _evaluate(root, out, tiny_clip)
    items, pointing = _expected(SPEC, BASE_LEFT_OUT)
    assert resumed["metrics"]["items"] == items and resumed["metrics"]["pointing"] == pytest.approx(pointing)
    keys = [json.loads(line)["key"] for line in _lines(out)]
    assert sorted(keys) == ["1", "2", "3", "4", "5", "6"]  # each image once: 7 never loads


def test_an_image_left_out_of_the_benchmark_is_no_longer_scored(tmp_path: Path, tiny_clip) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    _evaluate(root, out, tiny_clip)
    (root / "test.txt").write_text("1\n2\n3\n4\n6\n7\n")  # image 5 removed; its record stays in the file
    results = _evaluate(root, out, tiny_clip)
    spec = {i: e for i, e in SPEC.items() if i != "5"}
    items, pointing = _expected(spec)
    assert results["metrics"]["items"] == items and results["metrics"]["pointing"] == pytest.approx(pointing)
    assert results["images"] == 5 and any(json.loads(line)["key"] == "5" for line in _lines(out))


def test_a_phrase_changed_since_the_record_is_redone(tmp_path: Path, tiny_clip) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    _evaluate(root, out, tiny_clip)
    (root / "Sentences" / "1.txt").write_text("[/EN#11/other miss one] .\n")  # was "hit one"
    CURRENT_SPEC["1"] = {"11": "miss one"}
    extractor = PlacedExtractor(tiny_clip)
    results = run_evaluation(_settings(root, out), extractor=extractor)
    items, pointing = _expected(CURRENT_SPEC, BASE_LEFT_OUT)
    assert results["metrics"]["items"] == items and results["metrics"]["pointing"] == pytest.approx(pointing)
    assert extractor.calls == 1  # image 1 alone is redone


def test_an_item_added_since_the_record_is_redone(tmp_path: Path, tiny_clip) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    _evaluate(root, out, tiny_clip)
    CURRENT_SPEC["1"] = {"11": "hit one", "12": "hit one more"}
    write_flickr30k(tmp_path / "new", _images({"1": CURRENT_SPEC["1"]}), (WIDTH, HEIGHT))
    for sub in ("Annotations/1.xml", "Sentences/1.txt"):
        (root / sub).write_text((tmp_path / "new" / sub).read_text())
    results = _evaluate(root, out, tiny_clip)
    items, pointing = _expected(CURRENT_SPEC, BASE_LEFT_OUT)
    assert results["metrics"]["items"] == items and results["metrics"]["pointing"] == pytest.approx(pointing)


def test_records_without_their_run_file_or_with_a_damaged_one_are_refused(tmp_path: Path, tiny_clip) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    _evaluate(root, out, tiny_clip)
    (out / "run.json").write_text('{"task": "wsg", "data')
    with pytest.raises(ValueError, match="run.json' is damaged"):
        _evaluate(root, out, tiny_clip)
    (out / "run.json").unlink()
    with pytest.raises(ValueError, match="has no 'run.json' beside it"):
        _evaluate(root, out, tiny_clip)


def test_a_failed_write_keeps_the_previous_results(tmp_path: Path, tiny_clip, monkeypatch) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    _evaluate(root, out, tiny_clip)
    before = {name: (out / name).read_text() for name in ("results.json", "skipped.json", "run.json")}
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == "results.json":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        _evaluate(root, out, tiny_clip)
    assert {name: (out / name).read_text() for name in before} == before
    assert not [p.name for p in out.iterdir() if p.name.endswith(".partial")]


# ----------------------------------------------------------------------------- the command line

TINY = ["--clip-model", "wwbl-tiny-vit", "--clip-pretrained", "random", "--no-progress"]
ROOT = Path(__file__).resolve().parents[2]


def _cli(root: Path, out: Path) -> list[str]:
    return ["wsg", "--dataset", "flickr30k", "--root", str(root), "--method", "gae", "--out", str(out),
            "--batch-size", "2", *TINY]


def _main(args: list[str]) -> int:
    torch.manual_seed(0)  # the tiny CLIP is random: the same seed gives the same model
    return main(args)


def test_cli_skips_a_malformed_item_and_resumes_to_one_run(tmp_path: Path, capsys) -> None:
    root = _base(tmp_path)
    (root / "Sentences" / "3.txt").write_bytes(b"\xff\xfe")
    assert _main(_cli(root, tmp_path / "one")) == 0
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    items, _ = _expected(SPEC, BASE_LEFT_OUT | {"3/31"})
    assert one["metrics"]["items"] == items and (one["images"], one["images_total"]) == (5, 6)
    skipped = json.loads((tmp_path / "one" / "skipped.json").read_text())
    assert [line.split(":")[0] for line in skipped] == ["3", "5", "7"]
    assert "5/6 images evaluated, 3 skipped" in capsys.readouterr().out

    out = tmp_path / "resumed"
    assert _main(_cli(root, out)) == 0
    _truncate_last_line(out, root)
    assert _main(_cli(root, out)) == 0
    assert json.loads((out / "results.json").read_text())["metrics"] == one["metrics"]
    assert sorted(json.loads(line)["key"] for line in _lines(out)) == ["1", "2", "4", "5", "6"]


def _bad_split(root: Path, out: Path) -> tuple[Path, str]:
    (root / "test.txt").write_bytes(b"1\n\xff\n")
    return root / "test.txt", "line 2: not UTF-8"


def _empty_split(root: Path, out: Path) -> tuple[Path, str]:
    (root / "test.txt").write_text("")
    return root / "test.txt", "lists no image ids"


def _bad_run_file(root: Path, out: Path) -> tuple[Path, str]:
    out.mkdir()
    (out / "run.json").write_text("{")
    return out / "run.json", "is damaged"


WHOLE_FILE = {"split not UTF-8": _bad_split, "split empty": _empty_split, "run.json damaged": _bad_run_file}


@pytest.mark.parametrize("damage", WHOLE_FILE)
def test_cli_whole_file_problem_is_one_line_and_status_2(tmp_path: Path, capsys, damage: str) -> None:
    root, out = _base(tmp_path), tmp_path / "run"
    path, needle = WHOLE_FILE[damage](root, out)
    capsys.readouterr()
    assert main(_cli(root, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err and needle in err


@pytest.mark.slow  # a fresh interpreter importing torch: tens of seconds on a loaded machine
def test_python_m_wwbl_evaluation_whole_file_problem(tmp_path: Path) -> None:
    """The real command: status 2 and one line, no traceback (the tests above call its ``main``)."""
    root = _base(tmp_path)
    path, needle = _bad_split(root, tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "wwbl.evaluation", *_cli(root, tmp_path / "run")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and str(path) in done.stderr and needle in done.stderr
    assert "Traceback" not in done.stderr
