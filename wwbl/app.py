"""A browser demo: ``python -m wwbl.app`` (or ``make app``) serves WWbL on the bundled shapes-world models.

Upload an image or pick a bundled scene; leave the phrases empty for WWbL (what is where, from the image
alone) or give comma-separated phrases to ground them; choose network g or any registered training-free
heatmap source. Needs the optional extra: ``pip install -e '.[app]'``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from wwbl.cli import add_max_side_argument
from wwbl.defaults import MAX_SIDE
from wwbl.export import read_export_config
from wwbl.extractors import available_extractors
from wwbl.inference.api import WWbLModel, load
from wwbl.inference.captioner import BlipCaptioner
from wwbl.inference.pictures import overlay
from wwbl.inference.results import GroundingResult

try:
    import gradio as gr
except ImportError:  # optional extra: the library must import without it; main() says how to install it
    gr = None

TABLE_HEADERS = ["phrase", "score", "box (x1, y1, x2, y2)"]
SCENE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class Models:
    """One :class:`WWbLModel` per heatmap source, built on first use; BLIP is loaded once and shared."""

    def __init__(self, checkpoint: str, clip_checkpoint: str | None, captioner: str,
                 clip_model: str | None = None, device: str = "cpu", max_side: int | None = MAX_SIDE) -> None:
        self.checkpoint, self.clip_checkpoint, self.device = checkpoint, clip_checkpoint, device
        self.max_side = max_side
        # training-free sources run on the CLIP that g was trained against, unless told otherwise
        self.clip_model = clip_model or read_export_config(checkpoint)["clip"]["model"]
        self._captioner: BlipCaptioner | str = captioner
        self._models: dict[str, WWbLModel] = {}

    def get(self, method: str) -> WWbLModel:
        if method not in self._models:
            if method == "g":
                model = load(self.checkpoint, clip_checkpoint=self.clip_checkpoint, captioner=self._captioner,
                             device=self.device, max_side=self.max_side)
            else:
                model = load(method=method, clip=self.clip_model, clip_checkpoint=self.clip_checkpoint,
                             captioner=self._captioner, device=self.device, max_side=self.max_side)
            self._models[method] = model
        return self._models[method]

    def captioned(self, method: str) -> WWbLModel:
        """The model of ``method`` with BLIP loaded (the first load is kept for every other source)."""
        model = self.get(method)
        self._captioner = model.load_captioner()
        return model


def split_phrases(text: str | None) -> list[str]:
    return [phrase.strip() for phrase in (text or "").split(",") if phrase.strip()]


def results_table(result: GroundingResult) -> list[list[Any]]:
    return [[d.get("phrase", ""), round(d["score"], 3), str([round(v, 1) for v in d["box"]])]
            for d in result.detections.to_dicts()]


def look(models: Models, image: Image.Image, phrases_text: str | None, method: str) -> tuple[
        Image.Image, list[tuple[Image.Image, str]], list[list[Any]]]:
    """The overlay, one picture per phrase (with its phrase as caption) and the table of boxes."""
    phrases = split_phrases(phrases_text)
    result = models.get(method).ground(image, phrases) if phrases else models.captioned(method).detect(image)
    gallery = [(overlay(image, result, only=k), phrase) for k, phrase in enumerate(result.phrases)]
    return overlay(image, result), gallery, results_table(result)


def bundled_scenes(folder: str | None) -> list[str]:
    if not folder or not Path(folder).is_dir():
        return []
    return [str(p) for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in SCENE_SUFFIXES]


def build_app(models: Models, scenes: list[str]) -> Any:
    """The Gradio Blocks; its one endpoint is ``/look`` (image, phrases, method → overlay, gallery, table)."""

    def on_look(image: Image.Image | None, phrases_text: str, method: str):
        if image is None:
            raise gr.Error("upload an image or pick one of the scenes first")
        try:
            return look(models, image.convert("RGB"), phrases_text, method)
        except (ValueError, RuntimeError, FileNotFoundError) as error:  # incl. unsupported CLIP, missing BLIP
            raise gr.Error(f"{type(error).__name__}: {error}") from error

    methods = ["g"] + [name for name in available_extractors() if name != "g"]
    with gr.Blocks(title="What is Where by Looking", analytics_enabled=False) as app:
        gr.Markdown("## What is Where by Looking\nNo phrases: WWbL finds what is in the image and where. "
                    "Comma-separated phrases: each is grounded. One colour per phrase for its heat, boxes "
                    "and label.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(value=scenes[0] if scenes else None, type="pil", label="Image",
                                 elem_id="wwbl-image")
                phrases = gr.Textbox(label="Phrases (comma-separated; empty: WWbL)", placeholder="a red ring, "
                                     "a blue cross", elem_id="wwbl-phrases")
                method = gr.Dropdown(methods, value="g", label="Heatmap source", elem_id="wwbl-method")
                run = gr.Button("Look", variant="primary", elem_id="wwbl-run")
                if scenes:
                    gr.Examples([[scene] for scene in scenes], inputs=[image], label="Bundled scenes")
            with gr.Column():
                picture = gr.Image(type="pil", format="png", label="Overlay", elem_id="wwbl-overlay")
                gallery = gr.Gallery(label="Heatmap per phrase", columns=3, format="png", elem_id="wwbl-gallery")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Results", elem_id="wwbl-table")
        run.click(on_look, [image, phrases, method], [picture, gallery, table], api_name="look")
    return app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/shapes_g", help="exported network g folder")
    p.add_argument("--clip-checkpoint", default="checkpoints/shapes_clip", help="local CLIP weights")
    p.add_argument("--clip-model", default=None, help="open_clip model for training-free sources "
                                                       "(default: the one g was trained against)")
    p.add_argument("--captioner", default="checkpoints/shapes_blip", help="BLIP: local folder or Hugging Face id")
    p.add_argument("--scenes", default="data/shapes_samples", help="folder of example images")
    p.add_argument("--device", default="cpu")
    add_max_side_argument(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if gr is None:
        print("error: the browser demo needs gradio: pip install -e '.[app]'", file=sys.stderr)
        return 2
    args = parse_args(argv)
    try:
        models = Models(args.checkpoint, args.clip_checkpoint, args.captioner, args.clip_model, args.device,
                        args.max_side)
        models.get("g")  # missing or broken model files fail here, before the server starts
    except (FileNotFoundError, ValueError, KeyError) as error:  # MissingResourceError is a FileNotFoundError
        print(f"error: {error} (run from the repository root or pass --checkpoint/--clip-checkpoint)",
              file=sys.stderr)
        return 2
    build_app(models, bundled_scenes(args.scenes)).launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
