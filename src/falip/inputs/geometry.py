"""Where a pixel of the original image lands in the model's square input (pure arithmetic).

The same `Geometry` drives the image preprocessing and the box-to-token mapping, so the foveal
mask always covers the pixels the model actually sees.
"""

from __future__ import annotations

from dataclasses import dataclass

PREPROCESS_MODES = ("squash", "crop", "pad")


@dataclass(frozen=True)
class Geometry:
    """An axis-aligned map `x_in = x * scale_x + offset_x` (likewise y) into a `size` x `size` input."""

    size: int
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0
    resized_width: int = 0  # the intermediate resize (crop, pad) or `size` (squash)
    resized_height: int = 0

    def map_x(self, x: float) -> float:
        """Pixel x of the original image (may be fractional) -> x in the model's input, in input pixels."""
        return x * self.scale_x + self.offset_x

    def map_y(self, y: float) -> float:
        """Pixel y of the original image (may be fractional) -> y in the model's input, in input pixels."""
        return y * self.scale_y + self.offset_y


def geometry_for(mode: str, width: int, height: int, size: int) -> Geometry:
    """The geometry of one preprocessing mode for an image of `width` x `height` pixels into a square
    input of `size` pixels.

    - `squash`: resize to `size` x `size`, aspect ratio lost (the authors' FALIP code).
    - `crop`: resize the short side to `size`, then centre-crop (OpenAI CLIP's transform, with
      torchvision's rounding: long side `int(size * long / short)`, offset `round((new - size) / 2)`).
    - `pad`: pad to a centred square, then resize to `size` (the whole image stays visible).

    Raises ValueError for a side that is not positive or an unknown mode."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if mode == "squash":
        return Geometry(size, size / width, size / height, 0.0, 0.0, size, size)
    if mode == "crop":
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        left = int(round((new_w - size) / 2.0))
        top = int(round((new_h - size) / 2.0))
        return Geometry(size, new_w / width, new_h / height, -float(left), -float(top), new_w, new_h)
    if mode == "pad":
        side = max(width, height)
        scale = size / side
        pad_left, pad_top = (side - width) // 2, (side - height) // 2
        return Geometry(size, scale, scale, pad_left * scale, pad_top * scale, side, side)
    raise ValueError(f"unknown preprocessing {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}")
