"""The one door every image comes through: a path, uploaded bytes, a PIL image or an array in, RGB out.

User images (the API, `falip score|demo|explain`, `falip serve`) are turned as their EXIF orientation says,
so boxes drawn on what people see land on the right pixels. Data-set images are read as stored pixels
(`exif=False`), as the authors' code reads them (`Image.open(p).convert("RGB")`) and as their annotations
were drawn. One function, one flag: every entry point accepts and refuses the same images with the same
one-line `FalipError`.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import FalipError

ImageInput = str | Path | bytes | Image.Image | np.ndarray


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of any mode Pillow opens: 16- and 32-bit integer images are scaled from their bit
    depth (Pillow's own conversion clips them, so a 16-bit image would turn white), float images from
    [0, 1], palettes through their colours; an alpha channel is dropped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else float(2**32 - 1)
        grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        grey = np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


MAX_PIXELS_VARIABLE = "FALIP_MAX_IMAGE_PIXELS"
_PILLOW_LIMIT = threading.Lock()


def max_image_pixels() -> int | None:
    """The most pixels (width x height) an image file may have before falip refuses to decode it, a guard
    against decompression bombs (a small file that decodes into gigabytes): the environment variable
    `FALIP_MAX_IMAGE_PIXELS` when set (0: no limit), else where Pillow itself refuses, twice
    `PIL.Image.MAX_IMAGE_PIXELS` (178,956,970 by default; None there: no limit).

    Raises:
        FalipError: the variable is set to something that is not a whole number >= 0."""
    given = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if given:
        try:
            value = int(given.replace("_", "").replace(",", ""))
        except ValueError:
            value = -1
        if value < 0:
            raise FalipError(
                f"{MAX_PIXELS_VARIABLE} must be a whole number of pixels (0: no limit), got {given!r}"
            )
        return value or None
    pillow = Image.MAX_IMAGE_PIXELS
    return None if pillow is None else 2 * int(pillow)


def _too_large(name: str, pixels: int, limit: int, shape: str = "") -> FalipError:
    """The one-line refusal of an image over the pixel limit, saying how to raise the limit."""
    return FalipError(
        f"{name} has {pixels:,} pixels{shape}, over the limit of {limit:,} that guards against "
        f"decompression bombs; if you trust the file, raise it: {MAX_PIXELS_VARIABLE}={pixels} (0: no limit)"
    )


def _open(file, name: str) -> Image.Image:
    """`Image.open` (the header only: nothing decoded yet) under falip's pixel limit, which replaces
    Pillow's own (its warning silenced, its refusal lifted when the limit is raised above it)."""
    limit = max_image_pixels()
    pillow = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            if pillow is None or (limit is not None and limit <= 2 * pillow):
                img = Image.open(file)
            else:  # a limit above Pillow's: its check is off while the header is read
                with _PILLOW_LIMIT:
                    Image.MAX_IMAGE_PIXELS = None
                    try:
                        img = Image.open(file)
                    finally:
                        Image.MAX_IMAGE_PIXELS = pillow
        except Image.DecompressionBombError as exc:  # over Pillow's own limit, so over falip's
            sizes = [int(n) for n in re.findall(r"\d+", str(exc))]
            raise _too_large(name, sizes[0] if sizes else 0, limit) from None
    if limit is not None and img.width * img.height > limit:
        img.close()
        raise _too_large(name, img.width * img.height, limit, f" ({img.width}x{img.height})")
    return img


def _decode(file, name: str, exif: bool) -> Image.Image:
    """Decode `file` (a path or a file object) as `name` says in messages.

    Raises:
        FalipError: not an image Pillow decodes, a damaged one, or one over `max_image_pixels`."""
    try:
        with _open(file, name) as img:
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img) if exif else img)
    except UnidentifiedImageError:  # its message holds the file object's repr: say it plainly
        raise FalipError(f"cannot read {name}: not an image format Pillow can decode") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise FalipError(f"cannot read {name}: {exc}") from None


def open_image(image: ImageInput, *, exif: bool = True) -> Image.Image:
    """An RGB PIL image from what a user or a data set gives.

    Args:
        image: a file path, the bytes of an encoded image (an upload), a PIL image (any mode) or an
            (H, W, 3) uint8 array.
        exif: turn files and bytes as their EXIF orientation says (user images); False reads stored
            pixels (data sets, whose boxes were drawn on them). PIL images and arrays are taken as they are.
    Returns:
        An 8-bit RGB image (16-bit, float, palette and alpha modes converted, see `_to_rgb`).
    Raises:
        FalipError: a missing file, undecodable bytes, a file over the pixel limit (`max_image_pixels`,
            named with how to raise it), a wrongly shaped array or an unsupported type.
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FalipError(f"image not found: {path}")
        return _decode(path, f"image {path}", exif)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(image)), "the uploaded image", exif)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FalipError(f"an image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise FalipError(f"an image array must have pixels, got shape {image.shape}")
        return Image.fromarray(image, "RGB")
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    raise FalipError(
        f"cannot use {type(image).__name__} as an image: give a path, bytes, a PIL image or an array"
    )
