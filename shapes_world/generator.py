"""Procedural "shapes world": deterministic scenes of coloured shapes on cluttered backgrounds.

Every scene is a pure function of ``(world config, split, index)``: it is drawn from its own
``numpy.random.default_rng((seed, split_code, index))`` stream, so scenes can be generated in any
order, in parallel data-loader workers, or again later, and always come out identical.

A scene holds several objects (shape x colour x size) painted back to front; later objects may
overlap and occlude earlier ones, and each object's mask is its *visible* pixels (occlusion
accounted for), its box the tight box of that mask. Object combinations are sampled so that a
target often shares its colour or its shape with a distractor in the same image: only the full
phrase ("red circle") identifies it.

The open-world split: a fixed, seed-chosen set of colour-shape combinations is held out of the
training scenes of the grounding network g (and of the seen-combination test split); the
``openworld`` split places at least one held-out object in every scene and annotates only those.
The small CLIP and the BLIP captioner play the role of web-scale pretrained models, so their own
pretraining splits (``clip``, ``blip``) draw from all combinations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 40),
    "green": (35, 165, 55),
    "cyan": (40, 205, 220),
    "blue": (35, 65, 225),
    "purple": (145, 45, 195),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon")
BACKGROUNDS: tuple[str, ...] = ("striped", "checkered", "speckled", "cloudy")

PLACEMENT_CHUNK = 6
MIN_OBJECT_PIXELS = 12

# Split codes feed the per-scene random stream; fixed forever so that datasets stay reproducible.
SPLIT_CODES: dict[str, int] = {"clip": 1, "blip": 2, "train": 3, "val": 4, "test": 5, "openworld": 6,
                               "clip_eval": 7, "blip_eval": 8}
# Which combinations each split may draw: "all", "seen" (held-out removed) or "openworld".
SPLIT_COMBOS: dict[str, str] = {"clip": "all", "blip": "all", "clip_eval": "all", "blip_eval": "all",
                                "train": "seen", "val": "seen", "test": "seen", "openworld": "openworld"}


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the world. Sizes are radii in pixels; the image is square."""

    seed: int = 0
    image_size: int = 64
    min_objects: int = 2
    max_objects: int = 6
    min_radius: float = 4.0
    max_radius: float = 18.0
    share_prob: float = 0.7  # chance that a new object copies the colour or shape of one already placed
    min_visible: float = 0.55  # every object keeps at least this fraction of its own pixels visible
    colour_jitter: float = 14.0
    pixel_noise: float = 6.0
    clutter_specks: tuple[int, int] = (8, 30)
    num_heldout_combos: int = 10
    placement_tries: int = 30
    colours: tuple[str, ...] = tuple(COLOURS)  # the world's palette, a subset of COLOURS
    shapes: tuple[str, ...] = SHAPES  # the world's shapes, a subset of SHAPES

    def __post_init__(self) -> None:
        if not (1 <= self.min_objects <= self.max_objects):
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not (0 < self.min_radius <= self.max_radius < self.image_size / 2):
            raise ValueError("need 0 < min_radius <= max_radius < image_size / 2")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        for kind, names, known in (("colours", self.colours, tuple(COLOURS)), ("shapes", self.shapes, SHAPES)):
            unknown = [n for n in names if n not in known]
            if unknown or len(set(names)) != len(names) or len(names) < 2:
                raise ValueError(f"{kind} must be at least two distinct names from {known}, got {names}")
        if self.num_heldout_combos > len(self.colours) * len(self.shapes) // 2:
            raise ValueError("num_heldout_combos must leave at least half of the combinations seen")


@dataclass
class SceneObject:
    """One painted object: its words, geometry and visible mask."""

    colour: str
    shape: str
    centre: tuple[float, float]  # (x, y) in pixels
    radius: float
    mask: np.ndarray  # H x W bool, visible pixels only
    box: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))  # xyxy, 0-based inclusive pixel indices

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def size_word(self) -> str:
        return "small" if self.radius < 8 else ("large" if self.radius >= 13 else "medium")


@dataclass
class Scene:
    """An RGB uint8 image with its objects (back to front) and background kind."""

    index: int
    split: str
    image: np.ndarray  # H x W x 3 uint8
    objects: list[SceneObject]
    background: str
    annotated: list[int]  # indices of objects that grounding annotations cover


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    phase = (np.arctan2(v, u) * 5 / (2 * np.pi) + 0.25) % 1.0  # one point per unit of phase, first one up
    return np.hypot(u, v) <= 0.42 + 0.58 * np.abs(2 * phase - 1)


# Shape membership in units of the object's radius (u right, v down); areas are roughly comparable.
SHAPE_TESTS = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85,
    "triangle": lambda u, v: (v <= 0.75) & (np.abs(u) <= (v + 1.0) / 1.75),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.05,
    "star": _star,
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.3025),
    "hexagon": lambda u, v: (np.abs(v) <= 0.87) & (0.87 * np.abs(u) + 0.5 * np.abs(v) <= 0.87),
}


def _inside(shape_ids: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape membership for K objects at once (one vectorised test per distinct shape)."""
    out = np.zeros(u.shape, dtype=bool)
    for shape_index in np.unique(shape_ids):
        chosen = shape_ids == shape_index
        out[chosen] = SHAPE_TESTS[SHAPES[shape_index]](u[chosen], v[chosen])
    return out


def draw_shapes(shape_ids: np.ndarray, centres: np.ndarray, radii: np.ndarray, size: int) -> np.ndarray:
    """K x size x size boolean full (unoccluded) masks for K objects (``shape_ids`` index SHAPES)."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    u = (grid[None, None, :] - centres[:, 0, None, None]) / radii[:, None, None]
    v = (grid[None, :, None] - centres[:, 1, None, None]) / radii[:, None, None]
    u, v = np.broadcast_arrays(u, v)
    return _inside(np.asarray(shape_ids), np.ascontiguousarray(u), np.ascontiguousarray(v))


def visible_masks(full_masks: np.ndarray) -> np.ndarray:
    """Visible part of each mask when painted in order (later objects occlude earlier ones)."""
    covered_after = np.zeros_like(full_masks)
    if len(full_masks) > 1:
        later_union = np.logical_or.accumulate(full_masks[::-1], axis=0)[::-1]
        covered_after[:-1] = later_union[1:]
    return full_masks & ~covered_after


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight xyxy box (0-based inclusive pixel indices) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """Muted, textured background (float H x W x 3); small random-coloured clutter is added later.
    Texture scales are in units of a 64 px scene, so a larger scene is the same picture, finer."""
    scale = size / 64
    base = rng.uniform(45, 140) + rng.normal(0, 18, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "striped":
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12) * scale
        wave = np.sign(np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period))
    elif kind == "checkered":
        cell = rng.integers(3, 9) * scale
        wave = ((xx // cell + yy // cell) % 2) * 2 - 1.0
    elif kind == "speckled":
        wave = rng.normal(0, 1, size=(size, size))
    else:  # cloudy: smooth low-frequency noise from a coarse grid, upsampled by repetition + blur
        block = int(round(8 * scale))
        coarse = rng.normal(0, 1, size=(size // block + 2, size // block + 2))
        wave = np.kron(coarse, np.ones((block, block)))[:size, :size]
        half = block // 2
        wave = (wave + np.roll(wave, half, 0) + np.roll(wave, half, 1) + np.roll(wave, (half, half), (0, 1))) / 2
    amplitude = rng.uniform(10, 28)
    tint = rng.normal(0, 10, size=3)
    return base[None, None, :] + wave[..., None] * (amplitude + tint[None, None, :])


def _add_specks(rng: np.random.Generator, canvas: np.ndarray, count_range: tuple[int, int]) -> None:
    """Tiny random-coloured specks (1-2 px of a 64 px scene): clutter far smaller than any object."""
    size = canvas.shape[0]
    unit = max(1, round(size / 64))
    count = int(rng.integers(count_range[0], count_range[1] + 1))
    xs, ys = rng.integers(0, size - 2 * unit + 1, count), rng.integers(0, size - 2 * unit + 1, count)
    extents = rng.integers(1, 3, count) * unit
    colours = rng.uniform(0, 255, size=(count, 3))
    for dx in range(2 * unit):
        for dy in range(2 * unit):
            keep = (dx < extents) & (dy < extents)
            canvas[ys[keep] + dy, xs[keep] + dx] = colours[keep]


class ShapesWorld:
    """Deterministic scene source. ``world.scene(split, index)`` is a pure function."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.colours = self.config.colours
        self.shapes = self.config.shapes

    @cached_property
    def heldout_combos(self) -> frozenset[tuple[str, str]]:
        """Seed-chosen colour-shape pairs never in g's training scenes; every colour and shape still
        appears in training (at most two held-out pairs per colour and per shape)."""
        rng = np.random.default_rng((self.config.seed, 99))
        chosen: list[tuple[str, str]] = []
        per_colour: dict[str, int] = {}
        per_shape: dict[str, int] = {}
        for flat in rng.permutation(len(self.colours) * len(self.shapes)):
            colour, shape = self.colours[flat // len(self.shapes)], self.shapes[flat % len(self.shapes)]
            if per_colour.get(colour, 0) < 2 and per_shape.get(shape, 0) < 2:
                chosen.append((colour, shape))
                per_colour[colour] = per_colour.get(colour, 0) + 1
                per_shape[shape] = per_shape.get(shape, 0) + 1
            if len(chosen) == self.config.num_heldout_combos:
                break
        return frozenset(chosen)

    @cached_property
    def all_combos(self) -> tuple[tuple[str, str], ...]:
        return tuple((c, s) for c in self.colours for s in self.shapes)

    def combos_for(self, split: str) -> tuple[tuple[str, str], ...]:
        """Combinations a split may draw objects from (the open-world split draws from all)."""
        if SPLIT_COMBOS[self._check_split(split)] == "seen":
            return tuple(c for c in self.all_combos if c not in self.heldout_combos)
        return self.all_combos

    @staticmethod
    def _check_split(split: str) -> str:
        if split not in SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
        return split

    def _pick_combos(self, rng: np.random.Generator, split: str, count: int) -> list[tuple[str, str]]:
        """Unique combos; each new one shares a colour or shape with an earlier one w.p. share_prob.
        The open-world split starts with a held-out combination."""
        pool = list(self.combos_for(split))
        if SPLIT_COMBOS[split] == "openworld":
            heldout = sorted(self.heldout_combos)
            picked = [heldout[rng.integers(len(heldout))]]
        else:
            picked = [pool[rng.integers(len(pool))]]
        while len(picked) < count:
            available = [c for c in pool if c not in picked]
            if rng.random() < self.config.share_prob:
                anchor = picked[rng.integers(len(picked))]
                sharing = [c for c in available if c[0] == anchor[0] or c[1] == anchor[1]]
                available = sharing or available
            picked.append(available[rng.integers(len(available))])
        return picked

    def _place(self, rng: np.random.Generator, combos: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample centres/radii so that every object keeps ``min_visible`` of its area visible.
        Objects that cannot be placed after ``placement_tries`` are dropped (count varies anyway)."""
        cfg, size = self.config, self.config.image_size
        shape_ids = np.array([SHAPES.index(s) for _, s in combos])
        log_r = rng.uniform(np.log(cfg.min_radius), np.log(cfg.max_radius), size=(len(combos), cfg.placement_tries))
        radii_all = np.exp(log_r)
        margin = radii_all * 0.8  # centres keep most of each shape inside the frame
        centres_all = np.stack([rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)], axis=-1)
        kept_ids: list[int] = []
        kept_centres: list[np.ndarray] = []
        kept_radii: list[float] = []
        kept_masks = np.zeros((0, size, size), dtype=bool)
        for k, shape_id in enumerate(shape_ids):
            t = self._first_fit(kept_masks, shape_id, centres_all[k], radii_all[k])
            if t is None:
                continue
            kept_ids.append(k)
            kept_centres.append(centres_all[k, t])
            kept_radii.append(float(radii_all[k, t]))
            kept_masks = np.concatenate([kept_masks, draw_shapes(np.array([shape_id]), centres_all[k, t:t + 1],
                                                                 radii_all[k, t:t + 1], size)], axis=0)
        return np.array(kept_ids, dtype=int), np.array(kept_centres).reshape(-1, 2), np.array(kept_radii)

    def _first_fit(self, kept_masks: np.ndarray, shape_id: int, centres: np.ndarray, radii: np.ndarray) -> int | None:
        """Index of the first pre-drawn try that leaves every earlier object ``min_visible`` of its
        area; tries are tested in small vectorised chunks since the first chunk usually fits."""
        cfg, size = self.config, self.config.image_size
        old_vis = visible_masks(kept_masks).reshape(len(kept_masks), size * size).astype(np.float32)
        old_need = cfg.min_visible * kept_masks.reshape(len(kept_masks), size * size).sum(axis=1)
        for start in range(0, len(radii), PLACEMENT_CHUNK):
            chunk = slice(start, start + PLACEMENT_CHUNK)
            candidates = draw_shapes(np.full(len(radii[chunk]), shape_id), centres[chunk], radii[chunk], size)
            flat = candidates.reshape(len(candidates), -1).astype(np.float32)
            remaining = old_vis.sum(axis=1)[None, :] - flat @ old_vis.T  # tries x earlier objects
            ok = (remaining >= old_need[None, :]).all(axis=1) & (flat.sum(axis=1) >= MIN_OBJECT_PIXELS)
            if ok.any():
                return start + int(np.argmax(ok))
        return None

    def scene(self, split: str, index: int) -> Scene:
        """The scene ``index`` of ``split`` (deterministic)."""
        self._check_split(split)
        if index < 0:
            raise ValueError(f"scene index must be >= 0, got {index}")
        cfg, size = self.config, self.config.image_size
        rng = np.random.default_rng((cfg.seed, SPLIT_CODES[split], index))
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        combos = self._pick_combos(rng, split, count)
        kept, centres, radii = self._place(rng, combos)
        combos = [combos[k] for k in kept]
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        canvas = _background(rng, size, background)
        _add_specks(rng, canvas, cfg.clutter_specks)
        shape_ids = np.array([SHAPES.index(s) for _, s in combos], dtype=int)
        full = draw_shapes(shape_ids, centres, radii, size) if len(combos) else np.zeros((0, size, size), bool)
        visible = visible_masks(full)
        base_colours = np.array([COLOURS[c] for c, _ in combos], dtype=np.float32).reshape(-1, 3)
        colours = base_colours + rng.normal(0, cfg.colour_jitter, size=base_colours.shape)
        for k in range(len(combos)):  # paint back to front: K <= max_objects whole-array assignments
            canvas[full[k]] = colours[k]
        canvas += rng.normal(0, cfg.pixel_noise, size=canvas.shape)
        image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        objects = [
            SceneObject(colour=c, shape=s, centre=(float(centres[k, 0]), float(centres[k, 1])),
                        radius=float(radii[k]), mask=visible[k], box=mask_box(visible[k]))
            for k, (c, s) in enumerate(combos)
        ]
        if SPLIT_COMBOS[split] == "openworld":
            annotated = [k for k, o in enumerate(objects) if (o.colour, o.shape) in self.heldout_combos]
        else:
            annotated = list(range(len(objects)))
        return Scene(index=index, split=split, image=image, objects=objects, background=background,
                     annotated=annotated)
