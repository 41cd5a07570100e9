"""Write shapes-world splits in the real datasets' own layouts, so the real loaders read them.

COCO 2014 captions (g's training data)::

    <root>/annotations/captions_train2014.json
    <root>/annotations/instances_train2014.json      (boxes, uncompressed-RLE masks, categories)
    <root>/images/train2014/COCO_train2014_<12-digit id>.jpg

Flickr30k Entities (grounding evaluation; the official repository's files plus the images), one
root for the seen-combination splits (``flickr30k/``: ``val``, ``test``) and one for the open-world
split (``flickr30k_openworld/``, written as its ``test`` split so the standard loader reads it)::

    <root>/{val,test}.txt                              (image ids, one per line)
    <root>/flickr30k_entities/Annotations/<id>.xml     (1-based pixel boxes, like the official XML)
    <root>/flickr30k_entities/Sentences/<id>.txt       ([/EN#<id>/<type> phrase] syntax, 5 lines)
    <root>/flickr30k_images/flickr30k_images/<id>.jpg  (the released WWbL code's image folder)

Command: ``python -m shapes_world.writers --config configs/shapes/world.yaml --out data/shapes``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from shapes_world.captions import entity_id, entity_sentences, image_captions
from shapes_world.config import load_world_config
from shapes_world.generator import SPLIT_CODES, Scene, ShapesWorld

log = logging.getLogger(__name__)

JPEG_QUALITY = 95  # with 4:4:4 chroma so the colour of small shapes survives compression


def image_id(split: str, index: int) -> int:
    """Dataset-wide unique numeric image id (split code in the leading digits)."""
    return SPLIT_CODES[split] * 10_000_000 + index


def save_jpeg(image: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, quality=JPEG_QUALITY, subsampling=0)


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE of a boolean mask (column-major, starting with a run of zeros)."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def coco_category_ids(world: ShapesWorld) -> dict[tuple[str, str], int]:
    """One COCO category per colour-shape combination, ids 1..64 (supercategory = shape)."""
    return {combo: k + 1 for k, combo in enumerate(world.all_combos)}


def write_coco(world: ShapesWorld, root: str, split: str, count: int, coco_split: str = "train2014") -> None:
    """Write ``count`` scenes of ``split`` as a COCO 2014 captions + instances dataset."""
    categories = coco_category_ids(world)
    images, captions, instances = [], [], []
    image_dir = os.path.join(root, "images", coco_split)
    for index in tqdm(range(count), desc=f"{split} scenes", unit="scene", leave=False):
        scene = world.scene(split, index)
        iid = image_id(split, index)
        file_name = f"COCO_{coco_split}_{iid:012d}.jpg"
        save_jpeg(scene.image, os.path.join(image_dir, file_name))
        size = world.config.image_size
        images.append({"id": iid, "file_name": file_name, "width": size, "height": size, "license": 0})
        for k, text in enumerate(image_captions(scene, world.config.seed)):
            captions.append({"id": iid * 10 + k, "image_id": iid, "caption": text})
        for k, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = obj.box
            instances.append({
                "id": entity_id(iid, k), "image_id": iid, "category_id": categories[(obj.colour, obj.shape)],
                "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1], "area": int(obj.mask.sum()), "iscrowd": 0,
                "segmentation": {"counts": rle_counts(obj.mask), "size": [size, size]},
            })
    info = {"description": f"shapes world ({split} split, seed {world.config.seed})", "version": "1.0"}
    common = {"info": info, "licenses": [{"id": 0, "name": "generated", "url": ""}], "images": images}
    cats = [{"id": i, "name": f"{c} {s}", "supercategory": s} for (c, s), i in categories.items()]
    _write_json(os.path.join(root, "annotations", f"captions_{coco_split}.json"), {**common, "annotations": captions})
    _write_json(os.path.join(root, "annotations", f"instances_{coco_split}.json"),
                {**common, "annotations": instances, "categories": cats})


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def flickr_xml(scene: Scene, iid: int) -> str:
    """Official Flickr30k Entities annotation XML: 1-based inclusive pixel boxes; the background
    is a box-less entity marked ``scene``."""
    size = scene.image.shape[0]
    parts = [f"<annotation>\n\t<filename>{iid}.jpg</filename>\n\t<size>\n\t\t<width>{size}</width>\n"
             f"\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>"]
    for k in scene.annotated:
        x0, y0, x1, y1 = (v + 1 for v in scene.objects[k].box)
        parts.append(f"\t<object>\n\t\t<name>{entity_id(iid, k)}</name>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n"
                     f"\t\t\t<ymin>{y0}</ymin>\n\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>")
    parts.append(f"\t<object>\n\t\t<name>{entity_id(iid, -1)}</name>\n\t\t<nobndbox>1</nobndbox>\n"
                 f"\t\t<scene>1</scene>\n\t</object>\n</annotation>\n")
    return "\n".join(parts)


def write_flickr(world: ShapesWorld, root: str, splits: dict[str, int], names: dict[str, str] | None = None) -> None:
    """Write each world ``split: count`` as a Flickr30k Entities split list (named ``names[split]``,
    default the split's own name) plus its images and annotations."""
    entities = os.path.join(root, "flickr30k_entities")
    for split, count in splits.items():
        ids = []
        for index in tqdm(range(count), desc=f"{split} scenes", unit="scene", leave=False):
            scene = world.scene(split, index)
            if not scene.annotated:
                continue
            iid = image_id(split, index)
            ids.append(str(iid))
            save_jpeg(scene.image, os.path.join(root, "flickr30k_images", "flickr30k_images", f"{iid}.jpg"))
            _write_text(os.path.join(entities, "Annotations", f"{iid}.xml"), flickr_xml(scene, iid))
            _write_text(os.path.join(entities, "Sentences", f"{iid}.txt"),
                        "\n".join(entity_sentences(scene, iid, world.config.seed)) + "\n")
        list_name = (names or {}).get(split, split)
        _write_text(os.path.join(root, f"{list_name}.txt"), "\n".join(ids) + "\n")


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_samples(world: ShapesWorld, out: str, split: str = "test", count: int = 4) -> None:
    """A few scenes as ``<name>.png`` plus ``scenes.json`` (objects, boxes in xyxy pixels, phrases,
    captions): the bundled examples for the README and the demo. PNG keeps the pixels exact."""
    records = []
    for index in range(count):
        scene = world.scene(split, index)
        name = f"shapes_{split}_{index:03d}"
        os.makedirs(out, exist_ok=True)
        Image.fromarray(scene.image).save(os.path.join(out, f"{name}.png"))
        records.append({
            "file": f"{name}.png", "split": split, "index": index, "background": scene.background,
            "captions": image_captions(scene, world.config.seed),
            "objects": [{"phrase": o.phrase, "box_xyxy": [o.box[0], o.box[1], o.box[2] + 1, o.box[3] + 1],
                         "pixels": int(o.mask.sum())} for o in scene.objects],
        })
    _write_json(os.path.join(out, "scenes.json"), {"seed": world.config.seed, "scenes": records})


def write_world(world: ShapesWorld, out: str, coco_count: int, flickr_counts: dict[str, int],
                openworld_count: int) -> None:
    """The full offline benchmark: COCO-style training data for g (seen combinations), Flickr-style
    val/test (seen combinations) and the open-world test set (held-out combinations)."""
    write_coco(world, os.path.join(out, "coco"), "train", coco_count)
    write_flickr(world, os.path.join(out, "flickr30k"), flickr_counts)
    write_flickr(world, os.path.join(out, "flickr30k_openworld"), {"openworld": openworld_count},
                 names={"openworld": "test"})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/shapes/world.yaml", help="world + dataset sizes (YAML)")
    parser.add_argument("--out", default="data/shapes", help="output root")
    parser.add_argument("--samples", type=int, default=0,
                        help="write only this many sample scenes (PNG + scenes.json) to --out instead")
    args = parser.parse_args(argv)
    world_config, sizes = load_world_config(args.config)
    world = ShapesWorld(world_config)
    if args.samples > 0:
        write_samples(world, args.out, count=args.samples)
    else:
        write_world(world, args.out, int(sizes["coco_train"]), {k: int(v) for k, v in sizes["flickr"].items()},
                    int(sizes["openworld"]))
    log.info("wrote the shapes world to %s", args.out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
