"""Turn user regions (boxes or binary masks in original-image pixels) into foveal bias rows."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import FalipError
from .masks import BOX_RULES, bias_row, box_to_token_rect, coverage_bias_grid, rect_bias_grid
from .preprocess import Preprocessing

BOX_FORMATS = ("xywh", "xyxy")
Region = Sequence[float] | np.ndarray | torch.Tensor | Image.Image


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
    """Bias rows (R, grid**2 + 1) for the regions of one image of `image_size = (width, height)` pixels.

    A region is a box of 4 numbers in image pixels (`box_format`) or a binary mask shaped like the
    image. Boxes are mapped through `preprocessing`'s geometry onto the token grid (`patch` pixels per
    token) with `box_rule` (the authors' by default); masks weight the Gaussian by per-token coverage.
    `alpha` and `sigma` (token units) are Eq. 1-2's; `numerics` is the Gaussian's arithmetic
    (`masks.gaussian_patch`). Raises FalipError for an unknown box rule, a malformed box or mask, no
    region at all, and (naming the region's index) a box of zero size or wholly outside the image or a
    mask of another shape or covering no token the model sees."""
    if box_rule not in BOX_RULES:
        raise FalipError(f"unknown box rule {box_rule!r}; choose one of {', '.join(BOX_RULES)}")
    width, height = image_size
    geo = preprocessing.geometry(width, height)
    grid = preprocessing.size // patch
    rows = []
    for index, region in enumerate(regions):
        mask = _as_mask(region)
        try:
            if mask is not None:
                if mask.shape != (height, width):
                    raise ValueError(f"mask shape {mask.shape} does not match the image ({height}, {width})")
                grid_bias = coverage_bias_grid(
                    preprocessing.token_coverage(mask, patch), alpha, sigma, numerics
                )
            else:
                x0, y0, x1, y1 = to_xyxy(region, box_format)
                if x1 <= x0 or y1 <= y0:
                    raise ValueError(f"box has zero or negative width or height: {list(region)}")
                if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                    raise ValueError(f"box lies wholly outside the {width}x{height} image: {list(region)}")
                mapped = (geo.map_x(x0), geo.map_y(y0), geo.map_x(x1), geo.map_y(y1))
                rect = box_to_token_rect(mapped, preprocessing.size, patch, box_rule)
                grid_bias = rect_bias_grid(rect, grid, alpha, sigma, numerics)
        except ValueError as exc:
            raise FalipError(f"region {index}: {exc}") from None
        rows.append(bias_row(grid_bias))
    if not rows:
        raise FalipError("no region given: pass at least one box or mask")
    return torch.stack(rows)


def region_box(region: Region, box_format: str = "xywh") -> tuple[float, float, float, float]:
    """A region's `(x0, y0, x1, y1)` pixel box: the box itself, or a mask's bounding box (pixel edges, so
    x1 and y1 are one past the last set pixel). Raises FalipError for a malformed box or mask, or an
    empty mask."""
    mask = _as_mask(region)
    if mask is None:
        return to_xyxy(region, box_format)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise FalipError("the mask is empty: no pixel is set")
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)
