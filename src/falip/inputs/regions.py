"""Regions in: user boxes and binary masks (original-image pixels) checked once at the door
(`check_regions`, into `Box` and `Mask` values), then turned into foveal bias rows (Eq. 1-2) without
checking anything again."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import FalipError
from .masks import bias_row, box_to_token_rect, coverage_bias_grid, rect_bias_grid
from .preprocess import Preprocessing

BOX_FORMATS = ("xywh", "xyxy")


@dataclass(frozen=True)
class Box:
    """A checked box in image pixels: finite corners, positive width and height (`check_regions`)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """`(x0, y0, x1, y1)` corners in pixels."""
        return self.x0, self.y0, self.x1, self.y1

    @property
    def xywh(self) -> list[float]:
        """`[x, y, width, height]` in pixels (COCO's convention)."""
        return [self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0]


@dataclass(frozen=True, eq=False)
class Mask:
    """A checked binary mask: `pixels` (H, W) bool, shaped like its image (`check_regions`)."""

    pixels: np.ndarray


Region = Sequence[float] | np.ndarray | torch.Tensor | Image.Image | Box | Mask


def to_xyxy(box: Sequence[float], box_format: str = "xywh") -> tuple[float, float, float, float]:
    """A box as `(x0, y0, x1, y1)` floats; `xywh` is COCO's `[x, y, width, height]`, `xyxy` the corners.

    Raises FalipError for an unknown `box_format`, anything but 4 numbers, or a number not finite."""
    if box_format not in BOX_FORMATS:
        raise FalipError(f"unknown box format {box_format!r}; choose one of {', '.join(BOX_FORMATS)}")
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise FalipError(f"a box needs 4 numbers, got {box!r}") from None
    if len(values) != 4:
        raise FalipError(f"a box needs 4 numbers, got {len(values)}: {list(box)}")
    if not all(math.isfinite(v) for v in values):
        raise FalipError(f"a box's numbers must be finite, got {list(box)}")
    x, y, a, b = values
    return (x, y, x + a, y + b) if box_format == "xywh" else (x, y, a, b)


def _as_mask(region: Region) -> np.ndarray | None:
    """A binary (H, W) mask (True where > 0), or None for a box; more dimensions are an error."""
    if isinstance(region, Image.Image):
        return np.asarray(region.convert("L")) > 0
    if region is None:
        raise FalipError("a region is a box of 4 numbers or a binary (H, W) mask, got None")
    try:
        arr = region.detach().cpu().numpy() if isinstance(region, torch.Tensor) else np.asarray(region)
    except ValueError:  # ragged nesting: not a mask; let the box check say what is wrong
        return None
    if arr.ndim <= 1:
        return None
    if arr.ndim != 2:
        raise FalipError(f"a mask must be 2-D (H, W), one value per pixel; got shape {arr.shape}")
    try:
        return arr > 0
    except TypeError:
        raise FalipError(f"a mask must hold numbers, got {arr.dtype}") from None


def _is_single_box(regions) -> bool:
    """Four numbers given alone (one box) rather than a list of regions."""
    if isinstance(regions, (torch.Tensor, np.ndarray)):
        return regions.ndim == 1
    try:
        return len(regions) == 4 and all(isinstance(v, numbers.Real) for v in regions)
    except TypeError:
        return False


def check_regions(
    regions: Region | Sequence[Region], image_size: tuple[int, int], box_format: str = "xywh"
) -> list[Box | Mask]:
    """The door for regions: what a user gives, checked once into `Box` and `Mask` values.

    Args:
        regions: boxes (4 numbers in `box_format`, original-image pixels), binary masks shaped like the
            image ((H, W) arrays, tensors or PIL images; set where > 0), already checked `Box`/`Mask`
            values, or one box given alone.
        image_size: the image's `(width, height)` in pixels.
        box_format: "xywh" (COCO's `[x, y, width, height]`) or "xyxy" (corners).
    Returns:
        One `Box` or `Mask` per region, in order.
    Raises:
        FalipError: no region; an unknown box format; and, naming the region's 0-based index, a box that
            is not 4 finite numbers, has no width or height or lies wholly outside the image, or a mask that
            is not 2-D numbers shaped like the image.
    """
    if box_format not in BOX_FORMATS:
        raise FalipError(f"unknown box format {box_format!r}; choose one of {', '.join(BOX_FORMATS)}")
    if isinstance(regions, (Box, Mask, Image.Image)) or _is_single_box(regions):
        regions = [regions]
    width, height = image_size
    checked: list[Box | Mask] = []
    for index, region in enumerate(regions):
        try:
            if isinstance(region, (Box, Mask)):
                value = region
            else:
                mask = _as_mask(region)
                if mask is not None:
                    value = Mask(mask)
                else:
                    value = Box(*to_xyxy(region, box_format))
                    if value.x1 <= value.x0 or value.y1 <= value.y0:
                        raise FalipError(f"box has zero or negative width or height: {list(region)}")
                    if value.x1 <= 0 or value.y1 <= 0 or value.x0 >= width or value.y0 >= height:
                        raise FalipError(
                            f"box lies wholly outside the {width}x{height} image: {list(region)}"
                        )
            if isinstance(value, Mask) and value.pixels.shape != (height, width):
                raise FalipError(
                    f"mask shape {value.pixels.shape} does not match the image ({height}, {width})"
                )
        except FalipError as exc:
            raise FalipError(f"region {index}: {exc}") from None
        checked.append(value)
    if not checked:
        raise FalipError("no region given: pass at least one box or mask")
    return checked


def region_bias_rows(
    regions: Sequence[Region],
    image_size: tuple[int, int],
    preprocessing: Preprocessing,
    patch: int,
    *,
    alpha: float,
    sigma: float,
    box_format: str = "xywh",
    box_rule: str = "authors",
    numerics: str = "authors",
) -> torch.Tensor:
    """Bias rows (R, grid**2 + 1) for the checked regions of one image of `image_size = (width, height)`.

    Boxes are mapped through `preprocessing`'s geometry onto the token grid (`patch` pixels per token)
    with `box_rule` (the authors' by default, `masks.box_to_token_rect`); masks weight the Gaussian by
    per-token coverage. `alpha` and `sigma` (token units) are Eq. 1-2's; `numerics` is the Gaussian's
    arithmetic (`masks.gaussian_patch`). The settings come checked from `FalipSettings`; regions not yet
    checked go through `check_regions` (`box_format` is for those; checked `Box`/`Mask` values pass
    as they are). What only the geometry can tell is raised as FalipError naming the region: a box
    wholly inside the strip a centre crop cuts away, a mask covering no token the model sees."""
    regions = check_regions(regions, image_size, box_format)
    width, height = image_size
    geo = preprocessing.geometry(width, height)
    grid = preprocessing.size // patch
    rows = []
    for index, region in enumerate(regions):
        try:
            if isinstance(region, Mask):
                coverage = preprocessing.token_coverage(region.pixels, patch)
                grid_bias = coverage_bias_grid(coverage, alpha, sigma, numerics)
            else:
                mapped = (
                    geo.map_x(region.x0),
                    geo.map_y(region.y0),
                    geo.map_x(region.x1),
                    geo.map_y(region.y1),
                )
                rect = box_to_token_rect(mapped, preprocessing.size, patch, box_rule)
                grid_bias = rect_bias_grid(rect, grid, alpha, sigma, numerics)
        except ValueError as exc:
            raise FalipError(f"region {index}: {exc}") from None
        rows.append(bias_row(grid_bias))
    return torch.stack(rows)


def region_box(region: Region, box_format: str = "xywh") -> tuple[float, float, float, float]:
    """A region's `(x0, y0, x1, y1)` pixel box: the box itself, or a mask's bounding box (pixel edges, so
    x1 and y1 are one past the last set pixel). Raises FalipError for a malformed box or mask, or an
    empty mask."""
    if isinstance(region, Box):
        return region.xyxy
    mask = region.pixels if isinstance(region, Mask) else _as_mask(region)
    if mask is None:
        return to_xyxy(region, box_format)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise FalipError("the mask is empty: no pixel is set")
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)
