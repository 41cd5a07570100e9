"""A regression corpus of bad inputs for ``infer.py`` and the Python API (``wwbl.load(...).ground/.detect``).

    python tests/corpus/generate.py --out /tmp/corpus [--slow]

writes a small version of each class of bad input (images, paths, model files, options, API inputs)
under ``--out`` and ``manifest.json``, one entry per case: its ``name``, ``class`` and ``expect``:

- ``written`` / ``skipped`` / ``mixed`` (images and paths, run through one batch): each of its ``items``
  (a file as ``infer.py`` names it, relative to the corpus) is ``written`` (outputs of the upright
  ``size`` [h, w]) or ``skipped`` (in failures.json, the reason containing ``reason``);
- ``error`` (models, options, API): a clear error: ``infer.py`` exits 2 with one line on stderr that
  contains ``message`` (and the path ``names``, when given); the API raises ``error`` with ``message``;
- ``ok`` (API): a result in the frame ``size`` [h, w].

``specs`` are the ``--image`` arguments a batch case needs (``{corpus}``-relative, or absolute);
``argv`` the flags of a model or option case, ``{corpus}`` standing for the corpus folder; ``mode``
``wsg`` or ``wwbl``. Flags ``slow`` (12000×9000, 100000×2: written only with ``--slow``),
``needs_non_root`` (permissions that root ignores), ``needs_no_cuda`` / ``needs_no_mps`` and
``separate_run`` (with ``time_limit_s``) say when and how a case runs. Expectations are written by
hand from what each file is, never read from wwbl's output: this module imports no wwbl. Files stay
small on disk (flat colours compress; undamaged model files are links to the shipped ones). A folder
made unreadable (chmod 000) stays so: ``chmod -R u+rwx`` the corpus before deleting it as a user.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "checkpoints"
Case = dict[str, Any]
LONG_PHRASE = " ".join(["a small red circle beside a large blue square"] * 40)  # ~1,900 characters


# -- images ------------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_png(width: int, height: int, rgb: tuple[int, int, int] = (128, 128, 128), extra_chunks: bytes = b"",
             pixels: bool = True) -> bytes:
    """An 8-bit RGB PNG of one colour, written by hand row by row (a huge one never exists in memory),
    ``extra_chunks`` before IDAT; ``pixels=False``: no pixel data at all, only the declared size."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes(rgb) * width
    idat = b"".join(compressor.compress(row) for _ in range(height if pixels else 0)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra_chunks + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def chunk_bomb_png(kind: bytes, keyword: bytes) -> bytes:
    """A 4×4 PNG with an iCCP or zTXt chunk of ~30 kB that inflates to 30 MB (past PIL's chunk limits)."""
    payload = keyword + b"\x00\x00" + zlib.compress(b"\x00" * 30_000_000, 9)
    return flat_png(4, 4, extra_chunks=_chunk(kind, payload))


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def exif_rotated_jpeg() -> bytes:
    """40 wide × 20 high as stored, EXIF orientation 6 (turn 90° clockwise to view): upright 20 × 40."""
    image = Image.fromarray(noise(20, 40, seed=3))
    exif = image.getexif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif)


def _written(name: str, file: str, size: tuple[int, int], spec: str = "images") -> Case:
    return {"name": name, "class": "image", "expect": "written", "specs": [spec],
            "items": [{"file": file, "expect": "written", "size": list(size)}]}


def _skipped(name: str, file: str, reason: str, spec: str = "images") -> Case:
    return {"name": name, "class": "image", "expect": "skipped", "specs": [spec],
            "items": [{"file": file, "expect": "skipped", "reason": reason}]}


def image_cases(root: Path, slow: bool) -> list[Case]:
    """The bad image files, all in ``images/`` (one folder, one batch); the large ones in ``images_slow/``."""
    folder = root / "images"
    folder.mkdir()
    rgb = Image.fromarray(noise(30, 40, seed=1))
    files: dict[str, tuple[bytes, Case]] = {
        "bomb_iccp.png": (chunk_bomb_png(b"iCCP", b"profile"), _skipped("png_bomb_iccp", "", "too large")),
        "bomb_ztxt.png": (chunk_bomb_png(b"zTXt", b"Comment"), _skipped("png_bomb_ztxt", "", "too large")),
        # 400 MP declared in a few bytes: more than twice PIL's limit, refused before decoding
        "bomb_pixels.png": (flat_png(20_000, 20_000, pixels=False), _skipped("png_bomb_pixels", "", "pixels")),
        "wide_4000x2.png": (flat_png(4000, 2, (200, 40, 40)), _written("aspect_4000x2", "", (2, 4000))),
        "tall_16x16000.png": (flat_png(16, 16000, (40, 40, 200)), _written("aspect_16x16000", "", (16000, 16))),
        "photo_8000x6000.png": (flat_png(8000, 6000, (90, 160, 90)), _written("big_8000x6000", "", (6000, 8000))),
        "truncated.jpg": (half(encoded(Image.fromarray(noise(48, 64, seed=2)), "JPEG")),
                          _skipped("truncated_jpeg", "", "truncated")),
        "truncated.png": (half(encoded(Image.fromarray(noise(48, 64, seed=2)), "PNG")),
                          _skipped("truncated_png", "", "truncated")),
        "empty.png": (b"", _skipped("zero_bytes", "", "cannot identify")),
        "text.jpg": (b"these are notes, not a JPEG\n" * 4, _skipped("text_named_jpg", "", "cannot identify")),
        "tiny_1x1.png": (flat_png(1, 1), _skipped("one_pixel", "", "too small")),
        "cmyk.jpg": (encoded(rgb.convert("CMYK"), "JPEG"), _written("cmyk_jpeg", "", (30, 40))),
        "gray16.png": (encoded(Image.fromarray(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50), "PNG"),
                       _written("sixteen_bit_png", "", (30, 40))),
        "palette.png": (encoded(rgb.convert("P"), "PNG"), _written("palette_png", "", (30, 40))),
        "palette_alpha.png": (encoded(rgb.convert("P"), "PNG", transparency=0),
                              _written("palette_alpha_png", "", (30, 40))),
        "la.png": (encoded(rgb.convert("LA"), "PNG"), _written("la_png", "", (30, 40))),
        "one_bit.png": (encoded(rgb.convert("1"), "PNG"), _written("one_bit_png", "", (30, 40))),
        "exif_rotated.jpg": (exif_rotated_jpeg(), _written("exif_rotated_jpeg", "", (40, 20))),
    }
    if slow:
        (root / "images_slow").mkdir()
        files["../images_slow/photo_12000x9000.png"] = (flat_png(12000, 9000, (90, 90, 160)),
                                                        _written("big_12000x9000", "", (9000, 12000), "images_slow"))
        files["../images_slow/strip_100000x2.png"] = (flat_png(100_000, 2, (160, 90, 90)),
                                                      _written("strip_100000x2", "", (2, 100_000), "images_slow"))
    cases = []
    for name, (data, case) in files.items():
        (folder / name).write_bytes(data)
        case["items"][0]["file"] = os.path.normpath(f"images/{name}")
        case["slow"] = case["specs"] == ["images_slow"]
        cases.append(case)
    return cases


# -- paths -------------------------------------------------------------------------------------------
def small_png(path: Path, value: int = 90, size: tuple[int, int] = (32, 24)) -> None:
    """A small noisy image (WSG finds a box on it; a flat one has a flat heatmap)."""
    array = (noise(size[1], size[0], seed=value) // 2 + value // 2).astype(np.uint8)
    Image.fromarray(array).save(path)


def _path_case(name: str, specs: list[str], items: list[dict], **flags: Any) -> Case:
    outcomes = {item["expect"] for item in items}
    expect = outcomes.pop() if len(outcomes) == 1 else "mixed"
    return {"name": name, "class": "path", "expect": expect, "specs": specs, "items": items, **flags}


def _ok(file: str, size: tuple[int, int] = (24, 32)) -> dict:
    return {"file": file, "expect": "written", "size": list(size)}


def _bad(file: str, reason: str) -> dict:
    return {"file": file, "expect": "skipped", "reason": reason}


def path_cases(root: Path) -> list[Case]:
    base = root / "paths"
    for folder in ("names", "link_target", "glob_tree/sub/deeper", "special", "same_stem", "locked", "many"):
        (base / folder).mkdir(parents=True)
    long_name = "n" * 246 + ".png"  # 250 characters, the file-system limit is 255 bytes
    for name in ("²³.png", long_name):
        small_png(base / "names" / name)
    (base / "dangling.png").symlink_to(base / "no_such_file.png")
    os.mkfifo(base / "fifo.png")
    small_png(base / "link_target" / "inside.png")
    (base / "linked").symlink_to(base / "link_target", target_is_directory=True)
    for rel in ("top.png", "sub/middle.png", "sub/deeper/bottom.png"):
        small_png(base / "glob_tree" / rel)
    small_png(base / "special" / "fine.png")
    (base / "special" / "gone.png").symlink_to(base / "special" / "missing.png")
    os.mkfifo(base / "special" / "pipe.png")
    small_png(base / "same_stem" / "a.png", 60)
    small_png(base / "same_stem" / "a.jpg", 160)
    small_png(base / "locked" / "hidden.png")
    (base / "locked").chmod(0)
    for k in range(40):
        small_png(base / "many" / f"img_{k:02d}.png", value=k * 6)
    return [
        _path_case("superscript_digits_name", ["paths/names"], [_ok("paths/names/²³.png"),
                                                                _ok(f"paths/names/{long_name}")]),
        _path_case("dangling_symlink", ["paths/dangling.png"], [_bad("paths/dangling.png", "dangling")]),
        _path_case("fifo", ["paths/fifo.png"], [_bad("paths/fifo.png", "not a regular file")]),
        _path_case("dev_null", ["/dev/null"], [_bad("/dev/null", "not a regular file")]),
        _path_case("symlink_to_folder", ["paths/linked"], [_ok("paths/linked/inside.png")]),
        _path_case("recursive_glob", ["paths/glob_tree/**/*.png"],
                   [_ok(f"paths/glob_tree/{rel}") for rel in ("sub/deeper/bottom.png", "sub/middle.png", "top.png")]),
        _path_case("folder_with_dangling_link_and_fifo", ["paths/special"],
                   [_ok("paths/special/fine.png"), _bad("paths/special/gone.png", "dangling"),
                    _bad("paths/special/pipe.png", "not a regular file")]),
        _path_case("same_stem_png_and_jpg", ["paths/same_stem"], [_ok("paths/same_stem/a.jpg"),
                                                                  _ok("paths/same_stem/a.png")]),
        _path_case("unreadable_folder", ["paths/locked"], [_bad("paths/locked", "cannot list the folder")],
                   needs_non_root=True),
        _path_case("many_small_images", ["paths/many"], [_ok(f"paths/many/img_{k:02d}.png") for k in range(40)],
                   separate_run=True, time_limit_s=40),
    ]


# -- model files -------------------------------------------------------------------------------------
def _link_model(source: Path, target: Path, damaged: str | None = None) -> Path | None:
    """``target`` as a folder of links to ``source``'s files, but ``damaged`` copied (to be damaged); its path."""
    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.name == damaged:
            shutil.copy(file, target / file.name)
        else:
            (target / file.name).symlink_to(file)
    return target / damaged if damaged else None


def _truncate(path: Path) -> None:
    path.write_bytes(half(path.read_bytes()))


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def _edit_json(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))
    return apply


def _set_kwarg(key: str, value: Any) -> Callable[[Path], None]:
    return _edit_json(lambda config: config["kwargs"].__setitem__(key, value))


def _drop_two_weights(path: Path) -> None:
    state = load_file(str(path))
    for key in sorted(state)[:2]:
        state.pop(key)
    save_file(state, str(path))


# name: (damaged model, its damaged file, damage, run mode, what the one-line error says)
MODEL_DAMAGE: dict[str, tuple[str, str, Callable[[Path], None], str, str]] = {
    "g_weights_truncated": ("shapes_g", "model.safetensors", _truncate, "wsg", "corrupt or truncated"),
    "g_weights_corrupt": ("shapes_g", "model.safetensors", _random_bytes, "wsg", "corrupt or truncated"),
    "g_weights_missing_keys": ("shapes_g", "model.safetensors", _drop_two_weights, "wsg", "missing keys"),
    "g_config_wrong_type": ("shapes_g", "config.json", _set_kwarg("vgg_width_div", "eight"), "wsg",
                            'kwargs.vgg_width_div must be an integer, not string "eight"'),
    "g_config_unknown_kwarg": ("shapes_g", "config.json", _set_kwarg("colour", "red"), "wsg",
                               "kwargs ['colour'] are not options"),
    "g_config_null_kwarg": ("shapes_g", "config.json", _set_kwarg("text_dim", None), "wsg",
                            "kwargs.text_dim must be an integer, not null"),
    "g_config_size_mismatch": ("shapes_g", "config.json", _set_kwarg("decoder_channels", 32), "wsg",
                               "shape mismatch"),  # the weights (64 channels) are named, not the config
    "g_config_string_version": ("shapes_g", "config.json",
                                _edit_json(lambda config: config.__setitem__("format_version", "2")), "wsg",
                                'format_version "2"'),
    "clip_weights_truncated": ("shapes_clip", "open_clip_model.safetensors", _truncate, "wsg",
                               "corrupt or truncated"),
    "clip_weights_corrupt": ("shapes_clip", "open_clip_model.safetensors", _random_bytes, "wsg",
                             "corrupt or truncated"),
    "clip_config_unknown_key": ("shapes_clip", "open_clip_config.json",
                                _edit_json(lambda config: config["model_cfg"]["vision_cfg"].__setitem__("bogus", 1)),
                                "wsg", "open_clip cannot build a CLIP"),
    "clip_config_missing_key": ("shapes_clip", "open_clip_config.json",
                                _edit_json(lambda config: config["model_cfg"].pop("embed_dim")), "wsg",
                                "'model_cfg' lacks ['embed_dim']"),
    "blip_weights_truncated": ("shapes_blip", "model.safetensors", _truncate, "wwbl", "corrupt or truncated"),
    "blip_weights_corrupt": ("shapes_blip", "model.safetensors", _random_bytes, "wwbl", "corrupt or truncated"),
}


def model_cases(root: Path) -> list[Case]:
    """Per case a folder with shapes_g, shapes_clip and shapes_blip (g's config names ../shapes_clip): links
    to the shipped files but for the one damaged copy."""
    cases = []
    for name, (model, file, damage, mode, message) in MODEL_DAMAGE.items():
        folder = root / "models" / name
        for shipped in ("shapes_g", "shapes_clip", "shapes_blip"):
            damaged = _link_model(SHIPPED / shipped, folder / shipped, file if shipped == model else None)
            if damaged:
                damage(damaged)
        names = f"models/{name}/{model}/{'model.safetensors' if name == 'g_config_size_mismatch' else file}"
        cases.append({"name": name, "class": "model", "expect": "error", "mode": mode, "names": names,
                      "message": message, "argv": ["--checkpoint", f"{{corpus}}/models/{name}/shapes_g",
                                                   "--captioner", f"{{corpus}}/models/{name}/shapes_blip"]})
    bare = str(SHIPPED / "shapes_clip" / "open_clip_model.safetensors")
    cases.append({"name": "clip_bare_weights_file", "class": "model", "expect": "error", "mode": "wsg",
                  "names": bare, "message": f"pass the folder {SHIPPED / 'shapes_clip'} instead",
                  "argv": ["--method", "gae", "--clip-model", "wwbl-tiny-vit", "--clip-checkpoint", bare]})
    return cases


# -- options -----------------------------------------------------------------------------------------
def _option(name: str, argv: list[str], message: str, **flags: Any) -> Case:
    return {"name": name, "class": "option", "expect": "error", "mode": "wsg", "argv": argv, "message": message,
            **flags}


def option_cases(root: Path) -> list[Case]:
    folder = root / "options"
    folder.mkdir()
    (folder / "taken.txt").write_text("a file where the output folder should go\n")
    (folder / "read_only").mkdir()
    (folder / "read_only").chmod(0o555)
    return [
        _option("device_cuda_without_gpu", ["--device", "cuda"], "device 'cuda' is not available", needs_no_cuda=True),
        _option("device_mps_without_mps", ["--device", "mps"], "device 'mps' is not available", needs_no_mps=True),
        _option("device_cuda_index_absent", ["--device", "cuda:7"], "device 'cuda:7' is not available"),
        _option("device_nonsense", ["--device", "tpu9"], "unknown device 'tpu9'"),
        _option("device_empty", ["--device", ""], "unknown device ''"),
        _option("batch_size_zero", ["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        _option("batch_size_negative", ["--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
        _option("num_beams_zero", ["--num-beams", "0"], "--num-beams: must be at least 1, got 0"),
        _option("out_names_a_file", ["--out", "{corpus}/options/taken.txt"], "is a file, not a folder"),
        _option("out_below_a_file", ["--out", "{corpus}/options/taken.txt/results"], "cannot write into"),
        _option("out_in_proc", ["--out", "/proc/wwbl_corpus_results"], "cannot write into"),  # even root cannot
        _option("out_read_only_folder", ["--out", "{corpus}/options/read_only/results"], "cannot write into",
                needs_non_root=True),
        _option("phrase_empty", ["--phrase", ""], "--phrase: a phrase must hold some text"),
        _option("phrase_blank", ["--phrase", "a dog", "--phrase", "   "], "--phrase: a phrase must hold some text"),
    ]


# -- API inputs --------------------------------------------------------------------------------------
API_SIZE = (24, 32)  # (height, width) of every array the API cases pass
PIL_MODES = ["1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
             "I", "F", "I;16", "I;16B", "I;16L"]


def _api(name: str, source: dict, expect: str = "ok", **fields: Any) -> Case:
    case = {"name": name, "class": "api", "expect": expect, "input": source, "call": "ground",
            "phrases": ["a red circle"], **fields}
    if expect == "ok":
        case.setdefault("size", list(API_SIZE))
    return case


def _refused(message: str, error: str = "ImageLoadError") -> dict:
    return {"error": error, "message": message}


def _array_layouts(rgb: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """``rgb`` (uint8, H×W×3) as ``dtype`` (its white: 255, 65535, 1.0 or True) in each layout."""
    if dtype == "bool":
        values = rgb > 127
    elif dtype == "uint16":
        values = rgb.astype(np.uint16) * 257
    elif dtype in ("float32", "float64"):
        values = (rgb / 255.0).astype(dtype)
    else:
        values = rgb
    white = np.ones_like(values[..., :1]) * values.dtype.type(255 if dtype == "uint8" else
                                                              65535 if dtype == "uint16" else 1)
    return {"HW": values[..., 0], "HW1": values[..., :1], "HW3": values,
            "HW4": np.concatenate([values, white], axis=-1), "CHW": np.ascontiguousarray(values.transpose(2, 0, 1))}


def _save_array(root: Path, name: str, array: np.ndarray) -> str:
    np.save(root / "api" / f"{name}.npy", array)
    return f"api/{name}.npy"


def api_cases(root: Path) -> list[Case]:
    (root / "api").mkdir()
    rgb = noise(*API_SIZE, seed=7)
    rgb_file = _save_array(root, "rgb", rgb)
    cases = []
    for dtype in ("uint8", "float32", "float64", "bool", "uint16"):
        for layout, array in _array_layouts(rgb, dtype).items():
            source = {"kind": "numpy", "file": _save_array(root, f"{dtype}_{layout}", array)}
            if layout == "CHW":  # C×H×W is a tensor's layout: an array of it is refused, saying what was expected
                cases.append(_api(f"numpy_{dtype}_{layout}", source, "error", **_refused("H×W×3")))
            else:
                cases.append(_api(f"numpy_{dtype}_{layout}", source))
    tensors = {  # name: (array saved, accepted or what the refusal says)
        "uint8_CHW": (rgb.transpose(2, 0, 1), None),
        "float32_CHW": ((rgb / 255.0).astype(np.float32).transpose(2, 0, 1), None),
        "float64_CHW": ((rgb / 255.0).transpose(2, 0, 1), None),
        "float32_1HW": ((rgb[..., :1] / 255.0).astype(np.float32).transpose(2, 0, 1), None),
        "float32_HW": ((rgb[..., 0] / 255.0).astype(np.float32), None),
        "float32_4HW": (np.concatenate([rgb / 255.0, np.ones(API_SIZE + (1,))], -1).astype(np.float32)
                        .transpose(2, 0, 1), None),
        "uint8_HWC": (rgb, "permute it to C×H×W"),
        "float32_BCHW": ((rgb / 255.0).astype(np.float32).transpose(2, 0, 1)[None], "C×H×W"),
        "bool_CHW": ((rgb > 127).transpose(2, 0, 1), "uint8 or float"),
        "uint16_CHW": (rgb.astype(np.uint16).transpose(2, 0, 1) * 257, "uint8 or float"),
        "float32_0_255": (rgb.astype(np.float32).transpose(2, 0, 1), "must lie in [0, 1]"),
        "float32_nan": (np.full((3,) + API_SIZE, np.nan, np.float32), "NaN"),
    }
    for name, (array, refusal) in tensors.items():
        source = {"kind": "tensor", "file": _save_array(root, f"tensor_{name}", np.ascontiguousarray(array))}
        cases.append(_api(f"tensor_{name}", source, "error", **_refused(refusal)) if refusal
                     else _api(f"tensor_{name}", source))
    for mode in PIL_MODES:
        cases.append(_api(f"pil_{mode}", {"kind": "pil", "file": rgb_file, "mode": mode}))
    cases += [
        _api("path_str", {"kind": "str", "file": "images/cmyk.jpg"}, size=[30, 40]),
        _api("path_object", {"kind": "path", "file": "images/exif_rotated.jpg"}, size=[40, 20]),
        _api("path_bomb", {"kind": "str", "file": "images/bomb_ztxt.png"}, "error", **_refused("too large")),
        _api("path_truncated", {"kind": "path", "file": "images/truncated.png"}, "error", **_refused("truncated")),
        _api("path_missing", {"kind": "str", "file": "images/no_such.png"}, "error", **_refused("not found")),
        _api("path_fifo", {"kind": "path", "file": "paths/fifo.png"}, "error", **_refused("not a regular file")),
        _api("path_folder", {"kind": "path", "file": "images"}, "error", **_refused("not a regular file")),
        _api("bytes", {"kind": "bytes", "file": "images/cmyk.jpg"}, "error", **_refused("got bytes")),
        _api("phrase_empty", {"kind": "numpy", "file": rgb_file}, "error", phrases="",
             **_refused("non-empty string", "ValueError")),
        _api("phrase_blank", {"kind": "numpy", "file": rgb_file}, "error", phrases=["a dog", "  "],
             **_refused("non-empty string", "ValueError")),
        _api("phrase_none", {"kind": "numpy", "file": rgb_file}, "error", phrases=[None],
             **_refused("non-empty string", "ValueError")),
        _api("phrases_none_given", {"kind": "numpy", "file": rgb_file}, "error", phrases=[],
             **_refused("no phrases", "ValueError")),
        _api("phrase_over_long", {"kind": "numpy", "file": rgb_file}, phrases=[LONG_PHRASE]),
        _api("phrases_many", {"kind": "numpy", "file": rgb_file}, phrases=[f"shape number {k}" for k in range(30)]),
        _api("detect_cmyk_path", {"kind": "str", "file": "images/cmyk.jpg"}, call="detect", size=[30, 40]),
        _api("detect_uint16_HW", {"kind": "numpy", "file": "api/uint16_HW.npy"}, call="detect"),
        _api("detect_wide_strip", {"kind": "str", "file": "images/wide_4000x2.png"}, call="detect", size=[2, 4000]),
        _api("detect_refuses_a_list", {"kind": "list", "file": rgb_file}, "error", call="detect",
             **_refused("got list")),
    ]
    return cases


def api_input(case: Case, root: Path) -> Any:
    """The Python object an API case passes, built from its files under the corpus ``root``."""
    import torch  # only the API cases need it

    source = case["input"]
    path = root / source["file"]
    kind = source["kind"]
    if kind == "str":
        return str(path)
    if kind == "path":
        return path
    if kind == "bytes":
        return path.read_bytes()
    array = np.load(path)
    if kind == "numpy":
        return array
    if kind == "tensor":
        return torch.from_numpy(array)
    if kind == "list":
        return array.tolist()
    if kind == "pil":
        return pil_in_mode(array, source["mode"])
    raise ValueError(f"unknown API input kind {kind!r}")


def pil_in_mode(rgb: np.ndarray, mode: str) -> Image.Image:
    """``rgb`` as a PIL image of ``mode`` (the premultiplied and palette-alpha modes through their alpha modes)."""
    image = Image.fromarray(rgb)
    via = {"PA": "RGBA", "RGBa": "RGBA", "La": "LA"}.get(mode)
    return (image.convert(via) if via else image).convert(mode)


# -- the corpus --------------------------------------------------------------------------------------
def generate(out: Path, slow: bool = False) -> dict[str, Any]:
    """Write the corpus under ``out`` (which must not exist or be empty) and its manifest; the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: the corpus is written into a new folder")
    cases = image_cases(out, slow) + path_cases(out) + model_cases(out) + option_cases(out) + api_cases(out)
    small_png(out / "good.png", 120, (40, 30))
    manifest = {"good_image": "good.png", "long_phrase": LONG_PHRASE, "slow": slow, "cases": cases}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="a new (or empty) folder for the corpus")
    parser.add_argument("--slow", action="store_true", help="also write the large images (12000×9000, 100000×2)")
    args = parser.parse_args(argv)
    try:
        manifest = generate(args.out, args.slow)
    except FileExistsError as error:
        parser.error(str(error))
    print(f"wrote {len(manifest['cases'])} cases to {args.out} (manifest.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
