"""What every dataset loader returns, and the checks that say exactly what is missing.

A referring-expression dataset is a list of `RecImage`: one image, its candidate boxes and the
expressions that refer into it (region features are computed once per image). A classification
dataset is `ClsDataset`: class names and one `ClsExample` (image, one region, label) per image.
Boxes are `xywh` in original-image pixels. Every item has a `key` that is stable across runs, so an
interrupted evaluation can resume.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FalipError
from ..inputs.files import lines
from ..inputs.images import open_image

Box = list[float]
ImageSource = Path | Callable[[], Any]


_STRICT: ContextVar[bool] = ContextVar("falip_strict_data", default=False)


@contextmanager
def strict_data(enabled: bool = True):
    """Within this block a bad annotation stops the loading (`--strict`) instead of being skipped."""
    token = _STRICT.set(enabled)
    try:
        yield
    finally:
        _STRICT.reset(token)


class Skipped(list):
    """What a loader or a run left out, one line each naming the file, line or image and why."""

    def add(self, message: str) -> None:
        """Record `message` as skipped; inside `strict_data()` raise FalipError(message) instead."""
        if _STRICT.get():
            raise FalipError(message)
        self.append(message)


class RecData(list):
    """A referring-expression data set: its `RecImage`s, and what its loader skipped."""

    def __init__(self, images=(), skipped: Skipped | None = None):
        super().__init__(images)
        self.skipped = skipped if skipped is not None else Skipped()


def read_image(source: ImageSource, size: tuple[int, int] | None = None):
    """A data set's image from a file path (its stored pixels: no EXIF turn, as the authors' code reads
    it and as its boxes were drawn) or a zero-argument loader (generated scenes).

    Args:
        source: the image file, or a loader.
        size: the (width, height) the annotation gives, if it does.
    Raises:
        FalipError: the image cannot be read (see `falip.inputs.images.open_image`: missing, damaged,
            over the pixel limit), or its decoded size differs from `size` (its boxes would land on
            other pixels). The runner names the image in `skipped.json` and goes on.
    """
    if callable(source):
        return source()
    image = open_image(source, exif=False)
    if size is not None and tuple(image.size) != tuple(size):
        raise FalipError(
            f"decoded {image.size[0]}x{image.size[1]} pixels, but its annotation gives {size[0]}x{size[1]}: "
            "its boxes would land on other pixels"
        )
    return image


@dataclass
class RecExpression:
    """One referring expression: its stable `key`, its `text`, and its gold boxes (xywh, original-image
    pixels); `group` names what it refers to, for per-group accuracy."""

    key: str
    text: str
    gold: list[Box]
    group: str | None = None  # what the expression names, for per-group accuracy (the scene world's)


@dataclass
class RecImage:
    """One image of a referring-expression data set: its stable `key`, the image (a path or a loader),
    its candidate `boxes` (xywh, original-image pixels) and the `expressions` that refer into it."""

    key: str
    image: ImageSource
    boxes: list[Box]
    expressions: list[RecExpression] = field(default_factory=list)
    whole_image_fallback: bool = False  # no proposal for this image: the whole decoded image is the candidate
    size: tuple[int, int] | None = None  # (width, height) as the annotation gives it, checked on decoding


@dataclass
class ClsExample:
    """One region-classification example: the image (a path or a loader), one region (an xywh box in
    original-image pixels, or a loader of a box or binary mask) and its class index `label`."""

    key: str
    image: ImageSource
    region: Box | Callable[[], Box | np.ndarray]  # a box, or a loader of a box or binary mask
    label: int
    group: str | None = None  # e.g. Waterbirds' (bird, place) group, for worst-group accuracy
    size: tuple[int, int] | None = None  # (width, height) as the annotation gives it, checked on decoding

    def load_region(self):
        """The region: `region` called when it is a loader, else `region` itself."""
        return self.region() if callable(self.region) else self.region


@dataclass
class ClsDataset:
    """A region-classification data set: its class names, its examples (`label` indexes `classes`) and
    what its loader skipped."""

    classes: list[str]
    examples: list[ClsExample]
    skipped: Skipped = field(default_factory=Skipped)


def require(path: Path, what: str, hint: str = "") -> Path:
    """`path` if it exists, else one clear error naming what is missing and where it was looked for."""
    if not path.exists():
        raise FalipError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    return path


def require_folder(path: Path, what: str, hint: str = "") -> Path:
    """`path` if it is a folder, else one error naming the missing folder (or the file in its place)."""
    path = Path(path)
    if path.is_file():
        raise FalipError(f"{what} is a file, not a folder: {path}")
    return require(path, what, hint)


def read_table(
    path: Path, columns: int, skipped: Skipped | None = None, numeric: tuple[int, ...] = ()
) -> list[list[str]]:
    """Whitespace-separated rows with at least `columns` fields (CUB's text files); the fields at
    `numeric` must be numbers. A bad row is an error, or with `skipped` a note and left out."""
    rows = []
    for number, line in enumerate(lines(require(path, f"file {path.name}").read_text()), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        problem = None
        if len(fields) < columns:
            problem = f"expected {columns} fields"
        else:
            try:
                [float(fields[i]) for i in numeric]
            except ValueError:
                problem = "a field that must be a number is not"
        if problem:
            message = f"{path}:{number}: {problem}, got {line.strip()!r}"
            if skipped is None:
                raise FalipError(message)
            skipped.add(message)
            continue
        rows.append(fields)
    return rows


def load_detections(path: Path) -> dict[str, list[Box]]:
    """Detector proposals, ReCLIP's format: {image_id: [[x, y, w, h, ...], ...]} or a list of
    {"image_id": ..., "box": [x, y, w, h]} records. Keys are image ids as strings."""
    data = json.loads(require(Path(path), "detections file").read_text())
    out: dict[str, list[Box]] = {}
    if isinstance(data, dict):
        for image_id, boxes in data.items():
            out[str(image_id)] = [list(map(float, b[:4])) for b in boxes]
    elif isinstance(data, list):
        for record in data:
            out.setdefault(str(record["image_id"]), []).append(list(map(float, record["box"][:4])))
    else:
        raise FalipError(f"{path}: detections must be a JSON object or list")
    return out


def coco_boxes(instances: Path) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """COCO `instances.json`: images by id and annotations (id, bbox) by image id, ids as strings."""
    data = json.loads(require(Path(instances), "COCO instances file").read_text())
    try:
        images = {str(i["id"]): i for i in data["images"]}
        anns: dict[str, list[dict]] = {}
        for a in data["annotations"]:
            anns.setdefault(str(a["image_id"]), []).append(
                {"id": a["id"], "bbox": list(map(float, a["bbox"]))}
            )
    except (KeyError, TypeError) as exc:
        raise FalipError(f"{instances}: not a COCO instances file (missing {exc})") from None
    return images, anns
