"""A seeded world of generated scenes: coloured shapes with exact boxes on cluttered backgrounds,
each object centred in a block of an 8 x 8 lattice (the toy ViT's patch grid).

It exists so that this project can train, test and demonstrate a CLIP of its own on machines that
cannot download one. Every scene is a pure function of `(split, index)`: the three splits draw
from disjoint seed streams, so train, validation and test scenes never coincide.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (220, 38, 38),
    "green": (34, 170, 64),
    "blue": (40, 84, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 56, 200),
    "orange": (250, 132, 20),
}
SIZES = ("small", "big")
TEXTURES = ("plain", "striped")
ATTRIBUTES = ("size", "colour", "texture", "shape")  # word order in descriptions
ATTRIBUTE_VALUES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES, "texture": TEXTURES}
SPLITS = {"train": 0, "val": 1, "test": 2}
SIZE_RANGE = {"small": (0.19, 0.235), "big": (0.31, 0.36)}  # side of the object, as a fraction of the image
# Objects sit centred in blocks of an 8 x 8 lattice, the toy ViT's patch grid (128 px / 16 px):
# a ViT trained from scratch on two CPU cores does not learn shape from fragments cut at arbitrary
# offsets within the budget, and learns it quickly from aligned ones (docs/TOY_MODEL.md, "Why the lattice").
LATTICE = 8
BLOCK = {"small": 2, "big": 3}  # cells per side
SUPERSAMPLE = 4


@dataclass(frozen=True)
class SceneObject:
    """One object: `shape`, `colour`, `size` and `texture` (values from `SHAPES`, `COLOURS`, `SIZES`,
    `TEXTURES`) and its `box` (x, y, w, h) in pixels."""

    shape: str
    colour: str
    size: str
    texture: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x, y, w, h in pixels (COCO)

    def describe(self, attributes=ATTRIBUTES) -> str:
        """Words for the chosen attributes in a fixed order, e.g. "big red striped circle"."""
        return " ".join(getattr(self, a) for a in ATTRIBUTES if a in attributes)

    @property
    def centre(self) -> tuple[float, float]:
        """The box centre (x, y) in pixels."""
        x, y, w, h = self.box
        return x + w / 2, y + h / 2

    @property
    def label(self) -> str:
        """The region-classification class: colour and shape."""
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """One rendered scene: `image` (H, W, 3) uint8 with H = W, its `objects`, and `(split, index)`, which
    determine it."""

    image: np.ndarray  # (H, W, 3) uint8
    objects: list[SceneObject]
    split: str
    index: int

    @property
    def size(self) -> int:
        """The side of the square image, in pixels."""
        return self.image.shape[0]

    def pil(self) -> Image.Image:
        """The image as a PIL RGB image."""
        return Image.fromarray(self.image)

    def position_word(self, obj: SceneObject) -> str | None:
        """ "left" / "right" / "top" / "bottom" when the object is clearly there, else None."""
        cx, cy = obj.centre
        s = self.size
        options = [
            w
            for w, ok in (
                ("left", cx < 0.35 * s),
                ("right", cx > 0.65 * s),
                ("top", cy < 0.35 * s),
                ("bottom", cy > 0.65 * s),
            )
            if ok
        ]
        return options[0] if options else None

    def caption(
        self, rng: np.random.Generator, keep: float = 0.7, must: tuple[int, str] | None = None
    ) -> str:
        """A training caption naming every object, each with the shape and a random subset of the
        other attributes, sometimes with where it is and with "the" for "a":
        "a photo of a red circle and the left big square". `must = (object, attribute)` always
        names that attribute of that object; the random draws are the same either way."""
        parts = []
        for i in rng.permutation(len(self.objects)):
            obj = self.objects[i]
            forced = must[1] if must is not None and must[0] == i else None
            attrs = ["shape"] + [
                a for a in ("size", "colour", "texture") if rng.random() < keep or a == forced
            ]
            article = "the" if rng.random() < 0.3 else "a"
            text = f"{article} {obj.describe(attrs)}"
            where = self.position_word(obj)
            if where and rng.random() < 0.3:
                if rng.random() < 0.5:
                    text = f"the {where} {obj.describe(attrs)}"
                else:
                    text += f" on the {where}" if where in ("left", "right") else f" at the {where}"
            parts.append(text)
        return "a photo of " + " and ".join(parts)

    def expressions(self) -> list[tuple[int, str, str]]:
        """Referring expressions, one per object that can be singled out: (object index, text, kind).

        kind "attribute": the fewest attributes that no other object shares ("the red circle");
        kind "relational": twins that share every attribute are told apart by position
        ("the left red circle"), using the fewest attributes that single out the pair.
        """
        rng = np.random.default_rng([SPLITS[self.split], self.index, 104729])
        out = []
        for i, obj in enumerate(self.objects):
            others = [o for j, o in enumerate(self.objects) if j != i]
            found = _minimal_unique(obj, others, rng)
            if found is not None:
                out.append((i, "the " + obj.describe(found), "attribute"))
                continue
            twins = [j for j, o in enumerate(self.objects) if o.describe() == obj.describe()]
            if len(twins) != 2:
                continue
            j = twins[0] if twins[1] == i else twins[1]
            rest = [o for k, o in enumerate(self.objects) if k not in twins]
            words = _minimal_unique(obj, rest, rng) or ATTRIBUTES
            (xi, yi), (xj, yj) = obj.centre, self.objects[j].centre
            if abs(xi - xj) >= abs(yi - yj):
                where = "left" if xi < xj else "right"
            else:
                where = "top" if yi < yj else "bottom"
            out.append((i, f"the {where} {obj.describe(words)}", "relational"))
        return out


def _minimal_unique(
    obj: SceneObject, others: list[SceneObject], rng: np.random.Generator
) -> tuple[str, ...] | None:
    """A smallest attribute set (always with the shape) that no other object matches."""
    extra = ("size", "colour", "texture")
    for count in range(0, 4):
        unique = [
            ("shape", *combo)
            for combo in combinations(extra, count)
            if all(o.describe(("shape", *combo)) != obj.describe(("shape", *combo)) for o in others)
        ]
        if unique:
            return unique[int(rng.integers(len(unique)))]
    return None


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill) -> None:
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        t = 0.17
        draw.rectangle((cx - t * w, y0, cx + t * w, y1), fill=fill)
        draw.rectangle((x0, cy - t * h, x1, cy + t * h), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """Muted clutter: a gradient, thin low-saturation lines and blobs, and pixel noise."""
    base = rng.uniform(70, 180)
    tint = rng.uniform(-18, 18, size=3)
    ramp = np.linspace(-1, 1, size)
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]) * rng.uniform(10, 35)
    arr = base + tint[None, None, :] + grad[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        grey = rng.uniform(40, 210)
        colour = tuple(int(min(max(grey + rng.uniform(-20, 20), 0.0), 255.0)) for _ in range(3))
        if rng.random() < 0.6:
            pts = rng.uniform(0, size, size=4)
            draw.line(tuple(pts), fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(min(2.0, 0.03 * size), size * 0.06)  # 2 px from 67 px up, as trained
            cx, cy = rng.uniform(0, size, size=2)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    noisy = rng.normal(0, 6, size=(size, size, 3))
    noisy += np.asarray(img)
    return Image.fromarray(np.clip(noisy, 0, 255, out=noisy).astype(np.uint8))


def render(objects: list[SceneObject], size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw objects (boxes in pixels) over a cluttered background. Each object is drawn
    `SUPERSAMPLE` times larger on its own patch and box-filtered down, so edges are antialiased."""
    k = SUPERSAMPLE
    canvas = np.asarray(_background(size, rng), np.float32).copy()
    for obj in objects:
        x, y, w, h = obj.box
        left, top = int(np.floor(x)), int(np.floor(y))
        right, bottom = min(int(np.ceil(x + w)), size), min(int(np.ceil(y + h)), size)
        pw, ph = right - left, bottom - top
        ox, oy = (x - left) * k, (y - top) * k
        mask = Image.new("L", (pw * k, ph * k), 0)
        _draw_shape(ImageDraw.Draw(mask), obj.shape, (ox, oy, ox + w * k - 1, oy + h * k - 1), 255)
        alpha = np.asarray(mask.resize((pw, ph), Image.BOX), np.float32)[..., None] / 255.0
        paint = np.asarray(COLOURS[obj.colour], np.float32)
        if obj.texture == "striped":  # diagonal stripes at 35% brightness, area-averaged per pixel
            half = max(2, int(w * k / 8))
            diag = np.add.outer(np.arange(ph * k), np.arange(pw * k)) // half % 2 == 0
            lit = diag.reshape(ph, k, pw, k).mean(axis=(1, 3), dtype=np.float32)[..., None]
            paint = paint * (0.35 + 0.65 * lit)
        patch = canvas[top:bottom, left:right]
        canvas[top:bottom, left:right] = patch * (1 - alpha) + paint * alpha
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _place(
    sizes: list[str], size: int, rng: np.random.Generator, lattice: bool = True
) -> list[tuple[float, float, float, float]] | None:
    """Square boxes for objects of these sizes, or None when they do not fit. On the lattice each box
    is centred in a free block of 2 x 2 cells (small) or 3 x 3 (big); off it, anywhere with a gap."""
    cell = size / LATTICE
    taken = np.zeros((LATTICE, LATTICE), bool)
    boxes: list[tuple[float, float, float, float]] = []
    for name in sizes:
        lo, hi = SIZE_RANGE[name]
        span = BLOCK[name]
        for _ in range(60):
            if lattice:
                col, row = (int(v) for v in rng.integers(0, LATTICE - span + 1, size=2))
                if taken[row : row + span, col : col + span].any():
                    continue
                taken[row : row + span, col : col + span] = True
                side = float(rng.uniform(lo, hi) * size)
                x, y = col * cell + (span * cell - side) / 2, row * cell + (span * cell - side) / 2
            else:
                side = float(rng.uniform(lo, hi) * size)
                x, y = (float(v) for v in rng.uniform(1, size - side - 1, size=2))
                gap = 0.04 * size
                if not all(
                    x + side + gap <= bx or bx + bw + gap <= x or y + side + gap <= by or by + bh + gap <= y
                    for bx, by, bw, bh in boxes
                ):
                    continue
            boxes.append((round(x, 2), round(y, 2), round(side, 2), round(side, 2)))
            break
        else:
            return None
    return boxes


def random_object(rng: np.random.Generator) -> SceneObject:
    """An object with shape, colour, size and texture each drawn uniformly from `rng`; no box yet."""
    return SceneObject(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
        size=SIZES[int(rng.integers(len(SIZES)))],
        texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
    )


def _layout(
    split: str, index: int, size: int, objects: int | tuple[int, int], twin_rate: float, lattice: bool
) -> tuple[list[SceneObject], np.random.Generator]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if index < 0:
        raise ValueError("scene index must be >= 0")
    rng = np.random.default_rng([SPLITS[split], index, 7919])
    low, high = (objects, objects) if isinstance(objects, int) else objects
    while True:
        count = int(rng.integers(low, high + 1))
        objs = [random_object(rng) for _ in range(count)]
        if count >= 3 and rng.random() < twin_rate:
            objs[1] = replace(objs[0])
        boxes = _place([o.size for o in objs], size, rng, lattice)
        if boxes is not None:
            return [replace(o, box=b) for o, b in zip(objs, boxes)], rng


def layout(
    split: str,
    index: int,
    size: int = 128,
    objects: int | tuple[int, int] = (1, 4),
    twin_rate: float = 0.25,
    lattice: bool = True,
) -> list[SceneObject]:
    """The objects (with boxes) of `make_scene(split, index, ...)`, without drawing the image."""
    return _layout(split, index, size, objects, twin_rate, lattice)[0]


def make_scene(
    split: str,
    index: int,
    size: int = 128,
    objects: int | tuple[int, int] = (1, 4),
    twin_rate: float = 0.25,
    lattice: bool = True,
) -> Scene:
    """Scene number `index` of a split; `objects` is a count or an inclusive range; `lattice=False`
    places objects anywhere instead of on the `LATTICE` blocks (kept for `falip shape-pilot --free`).

    With probability `twin_rate` (in scenes of 3 or more objects) one object is a twin of another,
    so that relational expressions ("the left red circle") are needed.
    """
    objs, rng = _layout(split, index, size, objects, twin_rate, lattice)
    return Scene(render(objs, size, rng), objs, split, index)


def class_names() -> list[str]:
    """Every colour-shape name, the label set of region classification."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]
