"""Writers of tiny datasets in the real published layouts (COCO, Visual Genome, CUB, Flickr30k
Entities) for the data and training tests. Images are small random JPEGs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size_wh: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_coco(root: Path, n_images: int = 4) -> dict[int, list[str]]:
    """COCO 2014 captions layout; returns image id → captions."""
    images, annotations, captions = [], [], {}
    for i in range(1, n_images + 1):
        name = f"COCO_train2014_{i:012d}.jpg"
        write_image(root / "train2014" / name, (40 + i, 30), seed=i)
        images.append({"id": i, "file_name": name, "width": 40 + i, "height": 30})
        captions[i] = [f"a red cube number {i} on a table", f"the {i} cube"]
        annotations += [{"id": 10 * i + k, "image_id": i, "caption": c} for k, c in enumerate(captions[i])]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "captions_train2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations}))
    return captions


def write_visual_genome(root: Path, train_ids=(1, 2, 3), test_ids=(4,)) -> None:
    """VG layout with a MultiGrounding data_splits.pickle (builtin lists only)."""
    entries = []
    for i in list(train_ids) + list(test_ids):
        write_image(root / "VG_Images" / f"{i}.jpg", (36, 36), seed=100 + i)
        entries.append({"id": i, "regions": [
            {"region_id": 10 * i, "image_id": i, "phrase": f"A Green Ball {i}", "x": 1, "y": 1,
             "width": 5, "height": 5},
            {"region_id": 10 * i + 1, "image_id": i, "phrase": " ".join(["word"] * 80), "x": 0, "y": 0,
             "width": 3, "height": 3},
        ]})
    ann = root / "VG_Annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "region_descriptions.json").write_text(json.dumps(entries))
    with open(ann / "data_splits.pickle", "wb") as f:
        pickle.dump({"train": list(train_ids), "test": list(test_ids)}, f)


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]


def write_cub(root: Path, n_images: int = 6) -> dict[int, tuple]:
    """CUB_200_2011 layout; odd ids are train. Returns id → (class index, split, xywh box, size)."""
    info = {}
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    for i in range(1, n_images + 1):
        cls = i % 2
        rel = f"{CUB_CLASSES[cls]}/{CUB_CLASSES[cls].split('.')[1]}_{i:04d}.jpg"
        size = (48, 40)
        write_image(root / "images" / rel, size, seed=200 + i)
        box = (2.0 + i, 3.0, 20.0, 15.5)
        train = i % 2
        info[i] = (cls, train, box, size)
        lines["images"].append(f"{i} {rel}")
        lines["labels"].append(f"{i} {cls + 1}")
        lines["split"].append(f"{i} {train}")
        lines["boxes"].append(f"{i} " + " ".join(str(v) for v in box))
    root.mkdir(parents=True, exist_ok=True)
    (root / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(lines["labels"]) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(lines["boxes"]) + "\n")
    (root / "classes.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(CUB_CLASSES)))
    return info


def write_flickr30k(root: Path, ids=("1001", "1002"), split: str = "val") -> None:
    """Flickr30k Entities layout with one large boxed entity per image."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Sentences").mkdir(parents=True, exist_ok=True)
    for k, image_id in enumerate(ids):
        write_image(root / "flickr30k_images" / f"{image_id}.jpg", (50, 40), seed=300 + k)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            "<annotation><size><width>50</width><height>40</height><depth>3</depth></size>"
            "<object><name>7</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>35</ymax></bndbox>"
            "</object></annotation>")
        (root / "Sentences" / f"{image_id}.txt").write_text(
            "[/EN#7/people A man] walks .\n[/EN#7/people The person] smiles .\n")
    (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
