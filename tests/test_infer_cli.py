"""infer.py: outputs parse, boxes lie inside the images, a corrupt file is reported and skipped."""
import os
import subprocess
import sys
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers.tiny_blip import save_tiny_blip
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from wwbl.clip import FrozenCLIP
    from wwbl.export import export_grounding_net
    from wwbl.networks import GroundingNet

    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    text_dim = FrozenCLIP("wwbl-tiny-vit", pretrained="random").embed_dim
    net = GroundingNet(text_dim=text_dim, decoder_channels=8, vgg_width_div=16, pretrained_backbone=False)
    export_grounding_net(net, str(root / "g"), {"model": "wwbl-tiny-vit", "pretrained": "random", "checkpoint": None},
                         extra={"input_size": 64, "text_prefix": ""})
    save_tiny_blip(root / "blip", favourite_word="dog")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(images / "0001.png")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8), mode="L").save(images / "gray.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (images / "notes.txt").write_text("not an image")
    return root


def common(assets, out):
    return ["--checkpoint", str(assets / "g"), "--captioner", str(assets / "blip"), "--max-proposals", "4",
            "--max-caption-length", "8", "--batch-size", "2", "--out", str(out)]


def check_outputs(out, expected_stems, phrases=None):
    coco = json.loads((out / "coco_results.json").read_text())
    for stem, (h, w) in expected_stems.items():
        record = json.loads((out / f"{stem}.json").read_text())
        assert (record["height"], record["width"]) == (h, w)
        if phrases is not None:
            assert record["phrases"] == phrases
        heatmaps = np.load(out / f"{stem}_heatmaps.npy")
        assert heatmaps.shape == (len(record["phrases"]), h, w)
        with Image.open(out / f"{stem}_overlay.png") as overlay:
            # small images are enlarged for display, keeping the aspect ratio (to the pixel)
            assert min(overlay.size) >= 512 and abs(overlay.size[0] * h - overlay.size[1] * w) <= max(w, h)
        for det in record["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert det["phrase"] in record["phrases"]
        image_id = int(stem) if stem.isdigit() else stem
        mine = [c for c in coco if c["image_id"] == image_id]
        assert len(mine) == len(record["detections"])
        for entry, det in zip(mine, record["detections"]):
            x, y, bw, bh = entry["bbox"]
            assert [x, y, x + bw, y + bh] == pytest.approx(det["box"], abs=0.02)
    return coco


def test_grounding_run_skips_the_corrupt_file(infer, assets, tmp_path, capsys):
    out = tmp_path / "wsg"
    code = infer.main(["--image", str(assets / "images"), "--phrase", "a dog", "--phrase", "a tree"]
                      + common(assets, out))
    assert code == 1  # something failed: the exit status says so; the good images are still written
    check_outputs(out, {"0001": (40, 70), "gray": (50, 30)}, phrases=["a dog", "a tree"])
    failures = json.loads((out / "failures.json").read_text())
    assert [Path(f["image"]).name for f in failures] == ["broken.jpg"]
    assert "broken.jpg" in capsys.readouterr().err


def test_wwbl_run_on_a_glob(infer, assets, tmp_path):
    out = tmp_path / "wwbl"
    code = infer.main(["--image", str(assets / "images" / "*.png")] + common(assets, out))
    assert code == 0
    check_outputs(out, {"0001": (40, 70)})
    record = json.loads((out / "0001.json").read_text())
    assert len(record["captions"]) == 4 and len(record["phrases"]) == 1   # identical captions: one cluster


def test_iterative_run(infer, assets, tmp_path):
    out = tmp_path / "iterative"
    code = infer.main(["--image", str(assets / "images" / "0001.png"), "--iterative", "--reference-crops"]
                      + common(assets, out))
    assert code == 0
    check_outputs(out, {"0001": (40, 70)})
    record = json.loads((out / "0001.json").read_text())
    assert 1 <= len(record["phrases"]) == len(record["crop_captions"]) == len(record["confidences"])


def test_every_image_failing_is_a_failed_run(infer, assets, tmp_path):
    code = infer.main(["--image", str(assets / "images" / "broken.jpg"), "--phrase", "x"] + common(assets, tmp_path))
    assert code == 1


def test_missing_input_and_missing_checkpoint_are_clear_errors(infer, assets, tmp_path, capsys):
    assert infer.main(["--image", str(tmp_path / "nothing*.jpg")] + common(assets, tmp_path)) == 2
    assert "neither a file" in capsys.readouterr().err
    args = ["--image", str(assets / "images"), "--checkpoint", str(tmp_path / "no_g"), "--out", str(tmp_path)]
    assert infer.main(args) == 2
    assert "config" in capsys.readouterr().err


def test_a_clip_name_without_weights_is_refused_not_random(infer, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(image)
    base = ["--image", str(image), "--method", "gae", "--clip-model", "wwbl-tiny-vit", "--phrase", "a cat",
            "--out", str(tmp_path / "out")]
    assert infer.main(base) == 2
    assert "pretrained='random'" in capsys.readouterr().err
    assert infer.main(base + ["--clip-pretrained", "random"]) == 0


def test_without_a_model_named_the_bundled_models_run_and_say_so(infer, tmp_path, capsys):
    scene = ROOT / "data" / "shapes_samples" / "shapes_test_002.png"
    assert infer.main(["--image", str(scene), "--out", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "bundled shapes-world models" in err and "--checkpoint" in err
    record = json.loads((tmp_path / "shapes_test_002.json").read_text())
    assert record["phrases"]  # WWbL found and named something with the bundled g, CLIP and BLIP


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_an_unavailable_device_is_one_line(infer, assets, tmp_path, capsys):
    args = ["--image", str(assets / "images" / "0001.png"), "--phrase", "x", "--device", "cuda"]
    assert infer.main(args + common(assets, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: device 'cuda' is not available") and "\n" not in err


def test_bf16_autocast_inference_runs_end_to_end(infer, assets, tmp_path):
    args = ["--image", str(assets / "images" / "0001.png"), "--phrase", "a dog", "--precision", "bf16"]
    assert infer.main(args + common(assets, tmp_path)) == 0
    heatmaps = np.load(tmp_path / "0001_heatmaps.npy").astype(np.float32)  # stored as float16 by the writer
    assert heatmaps.shape == (1, 40, 70) and np.isfinite(heatmaps).all()
    assert 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0


def test_quiet_shows_no_progress_bars(tmp_path):
    scene = ROOT / "data" / "shapes_samples" / "shapes_test_001.png"
    done = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--image", str(scene), "--out", str(tmp_path),
                           "--quiet"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "it/s" not in done.stderr and "%|" not in done.stderr  # neither ours nor transformers' bars
    assert (tmp_path / "shapes_test_001.json").is_file()  # ran from another folder: the bundled models resolve


def test_every_input_ends_in_its_outputs_or_in_failures(infer, assets, tmp_path):
    """Special files, dangling links and name collisions are reported or renamed, never lost."""
    images = tmp_path / "in"
    images.mkdir()
    good = Image.fromarray(np.full((24, 32, 3), 90, np.uint8))
    for name in ("a.png", "a.jpg", "a_1.png", "x" * 150 + ".png"):
        good.save(images / name)
    (images / "gone.png").symlink_to(images / "missing.png")
    os.mkfifo(images / "pipe.png")
    out = tmp_path / "out"
    code = infer.main(["--image", str(images), "--image", "/dev/null", "--phrase", "a dog"] + common(assets, out))
    assert code == 1
    failed = sorted(Path(f["image"]).name for f in json.loads((out / "failures.json").read_text()))
    assert failed == ["gone.png", "null", "pipe.png"]
    written = sorted(p.name for p in out.glob("*.json") if p.name not in ("failures.json", "coco_results.json"))
    assert len(written) == 4 and len(set(written)) == 4  # a.png, a.jpg and a_1.png do not overwrite each other
    assert all(len(name) < 130 for name in written)  # the 150-character name is cut, with a hash
    sources = {json.loads((out / name).read_text())["image"] for name in written}
    assert len(sources) == 4
    assert not list(out.glob(".*.partial"))  # atomic writes leave no temporary files


def test_unique_stems_never_collide(infer):
    paths = [Path("d/a.png"), Path("d/a.jpg"), Path("d/a_1.png"), Path("e/a.png")]
    stems = infer.unique_stems(paths)
    assert stems[0] == "a" and len(set(stems)) == 4


def _save(path, size=(32, 24), value=90):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _written(out):
    return sorted(p.name for p in out.glob("*.json") if p.name not in ("failures.json", "coco_results.json"))


def test_awkward_file_names(infer, assets, tmp_path):
    """Superscript digits are no number (str.isdigit() says they are); names near the 255-byte limit,
    in ASCII or in 4-byte characters, get outputs whose names all fit."""
    images = tmp_path / "in"
    images.mkdir()
    names = ["²³.png", "0042.png", "n" * 250 + ".png", "😀" * 62 + ".png"]  # the last is 252 bytes
    for name in names:
        _save(images / name)
    out = tmp_path / "out"
    assert infer.main(["--image", str(images), "--phrase", "a dog"] + common(assets, out)) == 0
    written = _written(out)
    assert len(written) == 4 and all(len(p.name.encode()) <= 255 for p in out.iterdir())
    ids = {c["image_id"] for c in json.loads((out / "coco_results.json").read_text())}
    assert {"²³", 42} <= ids  # every WSG image has a box (min-max normalised maps); "²³" stays a string
    assert infer.unique_stems([Path("²³.png")]) == ["²³"]
    from wwbl.inference.coco_results import CocoIds

    assert CocoIds().image_id("²³.png") == "²³" and CocoIds().image_id("0042.png") == 42


def test_links_globs_and_folders_lose_nothing_and_repeat_nothing(infer, assets, tmp_path, capsys):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    _save(root / "a.png")
    _save(root / "sub" / "b.png")
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "gone.png").symlink_to(root / "missing.png")
    os.mkfifo(root / "sub" / "pipe.png")
    (tmp_path / "linked").symlink_to(root, target_is_directory=True)
    out = tmp_path / "out"
    argv = ["--image", str(tmp_path / "linked"), "--image", str(root / "**" / "*.png"), "--phrase", "a dog"]
    assert infer.main(argv + common(assets, out)) == 1
    assert _written(out) == ["a.json", "b.json"]  # a.png through the link and the glob: once
    failed = sorted(Path(f["image"]).name for f in json.loads((out / "failures.json").read_text()))
    assert failed == ["gone.png", "pipe.png"]
    err = capsys.readouterr().err
    assert "1 file(s) without an image suffix not taken (e.g. notes.txt)" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_an_unreadable_folder_is_reported(infer, assets, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    _save(locked / "a.png")
    locked.chmod(0)
    try:
        out = tmp_path / "out"
        assert infer.main(["--image", str(locked), "--phrase", "a dog"] + common(assets, out)) == 1
        assert "cannot list the folder" in (out / "failures.json").read_text()
    finally:
        locked.chmod(0o755)


def test_a_folder_that_cannot_be_listed_is_reported_not_raised(infer, tmp_path, monkeypatch):
    """The same path as above for any user (root included): listing fails with PermissionError."""
    locked = tmp_path / "locked"
    locked.mkdir()
    original = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    paths, problems, _ = infer.collect_images([str(locked)])
    assert paths == [] and problems == [{"image": str(locked), "error": "cannot list the folder: Permission denied"}]


def _contents(out):
    """Every file in ``out`` and its bytes."""
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_resume_recomputes_only_what_is_missing_and_ends_with_the_same_files(infer, assets, tmp_path,
                                                                           monkeypatch):
    import wwbl.inference.batch as batch

    images = tmp_path / "in"
    images.mkdir()
    for k, name in enumerate(["a.png", "b.png", "c.png"]):
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(images / name)
    (images / "broken.png").write_bytes(b"not a png")
    seen = []
    run_images = batch.run_images
    monkeypatch.setattr(batch, "run_images", lambda model, imgs, args: seen.extend(imgs) or run_images(model, imgs,
                                                                                                       args))
    out = tmp_path / "out"
    argv = ["--image", str(images), "--phrase", "a dog", "--phrase", "a cat"] + common(assets, out)
    torch.manual_seed(0)  # the assets' CLIP is random: built the same in every run
    assert infer.main(argv) == 1  # broken.png fails
    assert len(seen) == 3
    first = _contents(out)
    for name in ["b.json", "b_overlay.png", "b_heatmaps.npy", "b_heatmap_0.png", "b_heatmap_1.png",
                 "coco_results.json", "failures.json"]:
        (out / name).unlink()  # b's outputs gone and the run's files not yet written: as if killed
    (out / "c_heatmap_1.png").unlink()  # c's outputs incomplete: redone too
    seen.clear()
    torch.manual_seed(0)
    assert infer.main(argv + ["--resume"]) == 1
    assert len(seen) == 2  # b and c, not a
    assert _contents(out) == first
    seen.clear()
    assert infer.main(argv + ["--resume"]) == 1 and seen == []  # nothing left to do; the same files again
    assert _contents(out) == first


def test_a_large_image_is_answered_in_its_own_frame(infer, assets, tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (200, 600, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    out = tmp_path / "out"
    argv = ["--image", str(tmp_path / "wide.png"), "--phrase", "a dog", "--max-side", "64"] + common(assets, out)
    assert infer.main(argv) == 0
    check_outputs(out, {"wide": (200, 600)})


@pytest.mark.parametrize("flags, message", [
    (["--max-side", "0"], "--max-side: must be at least 1"),
    (["--max-side", "big"], "--max-side: expected a whole number"),
    (["--batch-size", "-1"], "--batch-size: must be at least 1"),
    (["--num-beams", "0"], "--num-beams: must be at least 1"),
    (["--device", ""], "unknown device ''"),
    (["--device", "cuda:x"], "unknown device"),
])
def test_bad_options_are_one_line_parse_errors(infer, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        infer.parse_args(["--image", "x.png", "--out", str(tmp_path)] + flags)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_out_naming_a_file_is_a_parse_error(infer, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(SystemExit):
        infer.parse_args(["--image", "x.png", "--out", str(tmp_path / "taken")])
    assert "is a file, not a folder" in capsys.readouterr().err
    assert infer.parse_args(["--image", "x.png", "--max-side", "none"]).max_side is None


def test_mps_on_a_machine_without_it_is_one_line(infer, assets, tmp_path, capsys):
    import torch as torch_

    if getattr(torch_.backends, "mps", None) is not None and torch_.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    argv = ["--image", str(assets / "images" / "0001.png"), "--phrase", "x", "--device", "mps"]
    assert infer.main(argv + common(assets, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: device 'mps' is not available") and "\n" not in err
