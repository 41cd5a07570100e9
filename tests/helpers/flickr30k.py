"""Flickr30k Entities annotations in the publisher's format, for the reader and evaluation tests."""
from pathlib import Path

import numpy as np
from PIL import Image

FLICKR_XML = """<annotation><filename>{id}.jpg</filename>
<size><width>200</width><height>100</height><depth>3</depth></size>
<object><name>11</name><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>51</xmax><ymax>61</ymax></bndbox></object>
<object><name>11</name><name>12</name><bndbox><xmin>101</xmin><ymin>1</ymin><xmax>151</xmax><ymax>41</ymax></bndbox></object>
<object><name>13</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>11</xmax><ymax>11</ymax></bndbox></object>
<object><name>14</name><nobndbox>1</nobndbox></object>
<object><name>0</name><scene>1</scene></object>
</annotation>"""
FLICKR_SENTENCES = (
    "[/EN#11/people A Man] rides [/EN#12/animals a horse] near [/EN#13/other a Rock] .\n"
    "[/EN#11/people The rider] and [/EN#14/other the wind] .\n"
)


def write_flickr30k(root: Path, images: dict, image_size: tuple[int, int] = (64, 48)) -> None:
    """A Flickr30k Entities layout under ``root``: per image id ``{entity: (0-based box, mention)}``, one
    sentence mentioning every entity, a random ``image_size`` (width, height) JPEG, and ``test.txt``
    listing the images in order."""
    for sub in ("Annotations", "Sentences", "flickr30k_images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = image_size
    for image_id, entities in images.items():
        objects = "".join(f"<object><name>{e}</name><bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin>"
                          f"<xmax>{b[2] + 1}</xmax><ymax>{b[3] + 1}</ymax></bndbox></object>"
                          for e, (b, _) in entities.items())
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{width}</width><height>{height}</height></size>{objects}</annotation>")
        sentence = " and ".join(f"[/EN#{e}/other {text}]" for e, (_, text) in entities.items())
        (root / "Sentences" / f"{image_id}.txt").write_text(sentence + " .\n")
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "flickr30k_images" / f"{image_id}.jpg")
    (root / "test.txt").write_text("".join(f"{image_id}\n" for image_id in images))
