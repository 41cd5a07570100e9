"""The bad-input corpus (tests/corpus/generate.py, its manifest.json) through infer.py and the Python API.

Every case ends as its manifest says: outputs written (the listed files exist, boxes inside the image,
the upright size), reported and skipped (failures.json with the reason, the others still written,
exit status 1), or a clear error (exit status 2 and one line on stderr; an exception naming the
problem). Never a traceback, a hang (subprocess timeouts) or a lost item (every input accounted for).
The image and path cases run in two infer.py processes (WSG and WWbL, side by side) over one list of
``--image`` arguments; model and option cases through ``infer.main`` in this process.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import wwbl
from wwbl.errors import ImageLoadError
from tests.corpus.generate import LONG_PHRASE, SHIPPED, api_input, generate

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
WSG_PHRASES = [LONG_PHRASE]  # one over-long phrase: each full-size heatmap costs time on the large images
SHIPPED_MODELS = ["--checkpoint", str(SHIPPED / "shapes_g"), "--captioner", str(SHIPPED / "shapes_blip")]
MODE_FLAGS = {"wsg": [flag for phrase in WSG_PHRASES for flag in ("--phrase", phrase)],
              "wwbl": ["--max-proposals", "8", "--max-caption-length", "8"]}
BATCH_TIMEOUT_S = 300
ERRORS = {"ImageLoadError": ImageLoadError, "ValueError": ValueError, "TypeError": TypeError}


def _unlock(root: Path) -> None:
    """Give back the permissions the corpus took away, so that it can be deleted."""
    for folder in (root / "paths" / "locked", root / "options" / "read_only"):
        if folder.exists():
            folder.chmod(0o755)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    manifest = generate(root)
    yield root, manifest
    _unlock(root)


def _cases(manifest: dict, *classes: str) -> list[dict]:
    return [case for case in manifest["cases"] if case["class"] in classes]


def _runs_here(case: dict) -> bool:
    """Whether the case's expectation holds on this machine and user."""
    mps = getattr(torch.backends, "mps", None)
    return not ((case.get("needs_non_root") and IS_ROOT) or (case.get("needs_no_cuda") and torch.cuda.is_available())
                or (case.get("needs_no_mps") and mps is not None and mps.is_available()))


def _batch_cases(manifest: dict, slow: bool = False) -> list[dict]:
    return [case for case in _cases(manifest, "image", "path")
            if case.get("slow", False) == slow and not case.get("separate_run") and _runs_here(case)]


def _specs(root: Path, cases: list[dict]) -> list[str]:
    """The cases' ``--image`` arguments, each once, in order."""
    return list(dict.fromkeys(str(root / spec) for case in cases for spec in case["specs"]))


def _batch_argv(root: Path, cases: list[dict], mode: str, out: Path) -> list[str]:
    return [*[flag for spec in _specs(root, cases) for flag in ("--image", spec)], *SHIPPED_MODELS,
            *MODE_FLAGS[mode], "--batch-size", "4", "--out", str(out), "--quiet"]


def _start(root: Path, cases: list[dict], mode: str, out: Path) -> subprocess.Popen:
    argv = [sys.executable, str(REPO / "infer.py"), *_batch_argv(root, cases, mode, out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        _, stderr = process.communicate(timeout=BATCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"infer.py hung: no exit within {BATCH_TIMEOUT_S} s")
    return process.returncode, stderr


def _run_in_process(infer, argv: list[str]) -> tuple[int, str]:
    """``infer.main(argv)`` here: its exit status and stderr (an exception would fail the test)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        return _main_status(infer, argv), stderr.getvalue()


@pytest.fixture(scope="module")
def batch_runs(corpus, infer, tmp_path_factory):
    """mode -> (exit status, stderr, output folder) of one run over every image and path case: WSG as
    an infer.py process (the real exit status and stderr), WWbL meanwhile through ``infer.main`` here
    (saving the second process's imports)."""
    root, manifest = corpus
    cases = _batch_cases(manifest)
    outs = {mode: tmp_path_factory.mktemp(f"batch_{mode}") / "out" for mode in MODE_FLAGS}
    process = _start(root, cases, "wsg", outs["wsg"])
    wwbl_run = _run_in_process(infer, _batch_argv(root, cases, "wwbl", outs["wwbl"]))
    return {"wsg": (*_finish(process), outs["wsg"]), "wwbl": (*wwbl_run, outs["wwbl"])}


# -- checking a batch's outputs ----------------------------------------------------------------------
def _records(out: Path) -> dict[str, tuple[str, dict]]:
    """The image each per-image JSON names -> (its stem, the record)."""
    found = {}
    for path in sorted(out.glob("*.json")):
        if path.name not in ("coco_results.json", "failures.json"):
            record = json.loads(path.read_text())
            assert record["image"] not in found, f"{record['image']} written twice"
            found[record["image"]] = (path.stem, record)
    return found


def _written_problems(out: Path, stem: str, record: dict, size: list[int], mode: str) -> list[str]:
    """What is wrong with one image's outputs (nothing: [])."""
    height, width = size
    problems = []
    if [record["height"], record["width"]] != size:
        problems.append(f"size {[record['height'], record['width']]}, expected {size}")
    if mode == "wsg" and record["phrases"] != WSG_PHRASES:
        problems.append(f"phrases {record['phrases']}, expected the one given")
    listed = [f"{stem}_overlay.png", f"{stem}_heatmaps.npy", *(e["file"] for e in record["heatmap_images"])]
    problems += [f"{name} missing" for name in listed if not (out / name).is_file()]
    if (out / f"{stem}_heatmaps.npy").is_file():
        shape = np.load(out / f"{stem}_heatmaps.npy", mmap_mode="r").shape
        if shape != (len(record["phrases"]), height, width):
            problems.append(f"heatmaps of shape {shape}")
    for detection in record["detections"]:
        x1, y1, x2, y2 = detection["box"]
        if not (all(map(math.isfinite, detection["box"])) and 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            problems.append(f"box {detection['box']} outside the {width}×{height} image")
        if detection["phrase"] not in record["phrases"]:
            problems.append(f"box for an unknown phrase {detection['phrase']!r}")
    return problems


def _case_problems(root: Path, out: Path, cases: list[dict], mode: str) -> list[str]:
    """Every item of ``cases`` as the manifest expects, and nothing else in ``out``; the discrepancies."""
    records = _records(out)
    failures = {entry["image"]: entry["error"] for entry in json.loads((out / "failures.json").read_text())}
    problems, expected = [], set()
    for case in cases:
        for item in case["items"]:
            name = str(root / item["file"])
            expected.add(name)
            where = f"{case['name']} ({item['file']})"
            if item["expect"] == "written":
                if name not in records:
                    problems.append(f"{where}: not written ({failures.get(name, 'and not in failures.json')})")
                    continue
                stem, record = records[name]
                problems += [f"{where}: {p}" for p in _written_problems(out, stem, record, item["size"], mode)]
            elif name not in failures:
                problems.append(f"{where}: not in failures.json" + (" but written" if name in records else ""))
            elif item["reason"].lower() not in failures[name].lower():
                problems.append(f"{where}: reason {failures[name]!r} lacks {item['reason']!r}")
    both = set(records) & set(failures)
    unexpected = (set(records) | set(failures)) - expected
    problems += [f"{name}: both written and failed" for name in both]
    problems += [f"{name}: reported but no case names it" for name in unexpected]
    return problems


@pytest.mark.parametrize("mode", sorted(MODE_FLAGS))
def test_one_batch_over_every_bad_image_and_path(corpus, batch_runs, mode):
    root, manifest = corpus
    code, stderr, out = batch_runs[mode]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == 1, stderr[-3000:]  # some items fail: status 1, the others written
    cases = _batch_cases(manifest)
    assert len(cases) >= 25
    assert _case_problems(root, out, cases, mode) == []
    assert not list(out.glob(".*.partial"))


def test_many_small_images_within_a_time_bound(corpus, infer, tmp_path):
    root, manifest = corpus
    [case] = [c for c in _cases(manifest, "path") if c.get("separate_run")]
    started = time.perf_counter()
    code = infer.main(["--image", *_specs(root, [case]), "--phrase", "a red circle", *SHIPPED_MODELS,
                       "--out", str(tmp_path), "--quiet"])
    elapsed = time.perf_counter() - started
    assert code == 0
    assert len(_records(tmp_path)) == len(case["items"]) == 40
    assert elapsed < case["time_limit_s"], f"{elapsed:.1f} s for 40 small images"


@pytest.mark.skipif(IS_ROOT, reason="root reads and writes whatever the permissions")
def test_cases_that_need_permissions_to_bite(corpus, infer, tmp_path, capsys):
    root, manifest = corpus
    [locked] = [c for c in _cases(manifest, "path") if c.get("needs_non_root")]
    out = tmp_path / "locked"
    code = infer.main(["--image", *_specs(root, [locked]), "--phrase", "a dog", *SHIPPED_MODELS, "--out", str(out)])
    assert code == 1 and _case_problems(root, out, [locked], "wsg") == []
    [read_only] = [c for c in _cases(manifest, "option") if c.get("needs_non_root")]
    assert _one_line_error_problem(root, infer, read_only, tmp_path, capsys) == ""


# -- model files and options: exit status 2, one line ------------------------------------------------
def _main_status(infer, argv: list[str]) -> int:
    try:
        return infer.main(argv)
    except SystemExit as exit_:  # argparse's errors
        return exit_.code


def _one_line_error_problem(root: Path, infer, case: dict, tmp_path: Path, capsys) -> str:
    """What is wrong with ``case``'s one-line error ("" when it is as expected)."""
    argv = [arg.replace("{corpus}", str(root)) for arg in case["argv"]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / case["name"])]
    if "--checkpoint" not in argv and "--method" not in argv:
        argv += SHIPPED_MODELS
    mode = ["--phrase", "a red circle"] if case["mode"] == "wsg" and "--phrase" not in argv else []
    capsys.readouterr()
    try:
        code = _main_status(infer, ["--image", str(root / "good.png"), *mode, *argv, "--quiet"])
    except Exception as error:  # noqa: BLE001  (reported with the other cases: a traceback on the command line)
        return f"{case['name']}: raised {type(error).__name__}: {error}"
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    if code != 2 or len(lines) != 1:
        return f"{case['name']}: exit status {code}, stderr {lines}"
    names = str(root / case["names"]) if case.get("names") else ""
    if case["message"] not in lines[0] or names not in lines[0] or "Traceback" in lines[0]:
        return f"{case['name']}: {lines[0]!r} lacks {case['message']!r}" + (f" or {names}" if names else "")
    return ""


@pytest.mark.parametrize("kind", ["model", "option"])
def test_model_and_option_errors_are_one_line(corpus, infer, tmp_path, capsys, kind):
    root, manifest = corpus
    cases = [case for case in _cases(manifest, kind) if _runs_here(case)]
    assert len(cases) >= (15 if kind == "model" else 12)
    problems = [_one_line_error_problem(root, infer, case, tmp_path, capsys) for case in cases]
    assert [problem for problem in problems if problem] == []


# -- the Python API ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_model():
    return wwbl.load(SHIPPED / "shapes_g", captioner=str(SHIPPED / "shapes_blip"))


def _result_problem(result, case: dict) -> str:
    height, width = case["size"]
    if tuple(result.image_size) != (height, width):
        return f"image_size {result.image_size}, expected {(height, width)}"
    if tuple(result.heatmaps.shape) != (len(result.phrases), height, width):
        return f"heatmaps of shape {tuple(result.heatmaps.shape)}"
    if case["call"] == "ground" and result.phrases != [p.strip() for p in case["phrases"]]:
        return f"phrases {result.phrases[:2]}…"
    boxes = result.detections.boxes
    inside = (torch.isfinite(boxes).all() and (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
              and (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
              and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
    return "" if inside else f"boxes {boxes.tolist()} outside the {width}×{height} image"


def _api_problem(model, root: Path, case: dict) -> str:
    image = api_input(case, root)
    call = (lambda: model.ground(image, case["phrases"])) if case["call"] == "ground" else lambda: model.detect(image)
    try:
        result = call()
    except Exception as error:  # noqa: BLE001  (the case says which error, if any, is right)
        message = str(error)
        if case["expect"] == "ok":
            return f"raised {type(error).__name__}: {message}"
        if not isinstance(error, ERRORS[case["error"]]) or case["message"] not in message or "\n" in message:
            return f"raised {type(error).__name__}: {message!r}, expected {case['error']} with {case['message']!r}"
        return ""
    if case["expect"] == "error":
        return f"accepted, expected {case['error']} with {case['message']!r}"
    return _result_problem(result, case)


def test_every_api_input_is_answered_or_refused_clearly(corpus, shipped_model):
    root, manifest = corpus
    cases = _cases(manifest, "api")
    assert len(cases) >= 70
    problems = {case["name"]: _api_problem(shipped_model, root, case) for case in cases}
    assert {name: problem for name, problem in problems.items() if problem} == {}


# -- the large images (slow) -------------------------------------------------------------------------
@pytest.mark.slow
def test_the_large_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus_slow") / "corpus"
    manifest = generate(root, slow=True)
    try:
        cases = _batch_cases(manifest, slow=True)
        assert {case["name"] for case in cases} == {"big_12000x9000", "strip_100000x2"}
        out = tmp_path_factory.mktemp("slow_out") / "out"
        code, stderr = _finish(_start(root, cases, "wsg", out))
        assert "Traceback" not in stderr and code == 0, stderr[-3000:]
        assert _case_problems(root, out, cases, "wsg") == []
    finally:
        _unlock(root)
