"""Visual prompts that edit pixels: the baselines FALIP is compared with in the paper.

Each prompt is a function `(image, box_xyxy) -> image` on PIL RGB images, boxes in pixels; the
registry `VISUAL_PROMPTS` names them, and `compose` chains them (e.g. RedCircle after blur).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import FalipError

Box = tuple[float, float, float, float]
VisualPrompt = Callable[[Image.Image, Box], Image.Image]


def _pixel_box(image: Image.Image, box: Box) -> tuple[int, int, int, int]:
    """The box's pixels, clipped to the image; an empty box is an error."""
    x0, y0, x1, y1 = (float(v) for v in box)
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(image.width, int(np.ceil(x1))), min(image.height, int(np.ceil(y1)))
    if right <= left or bottom <= top:
        raise FalipError(f"box {tuple(box)} covers no pixel of the {image.width}x{image.height} image")
    return left, top, right, bottom


def red_circle(image: Image.Image, box: Box, colour=(255, 0, 0), thickness: int = 2, enlarge: float = 1.0) -> Image.Image:
    """RedCircle (Shtedritski et al., 2023): an ellipse outline around the box. `enlarge` scales its
    axes about the box centre (sqrt(2) passes through the box corners)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * enlarge, (y1 - y0) / 2 * enlarge
    out = image.copy()
    ImageDraw.Draw(out).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=tuple(colour), width=thickness)
    return out


def _keep_region(edited: Image.Image, original: Image.Image, box: Box) -> Image.Image:
    left, top, right, bottom = _pixel_box(original, box)
    edited.paste(original.crop((left, top, right, bottom)), (left, top))
    return edited


def blur_outside(image: Image.Image, box: Box, std: float = 3.0) -> Image.Image:
    """Gaussian blur (standard deviation `std` pixels) everywhere but the box."""
    return _keep_region(image.filter(ImageFilter.GaussianBlur(radius=std)), image, box)


def grayscale_outside(image: Image.Image, box: Box) -> Image.Image:
    """Grey everywhere but the box."""
    return _keep_region(image.convert("L").convert("RGB"), image, box)


def crop(image: Image.Image, box: Box, margin: float = 0.0) -> Image.Image:
    """The box alone, grown by `margin` (a fraction of its size) on every side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return image.crop(_pixel_box(image, (x0 - dx, y0 - dy, x1 + dx, y1 + dy)))


def colour_shade(image: Image.Image, box: Box, colour=(255, 0, 0), opacity: float = 0.5) -> Image.Image:
    """CPT (Yao et al., 2021): the box shaded with a translucent colour; pair with `cpt_text`."""
    left, top, right, bottom = _pixel_box(image, box)
    region = np.asarray(image.crop((left, top, right, bottom)), np.float32)
    shaded = (1 - opacity) * region + opacity * np.asarray(colour, np.float32)
    out = image.copy()
    out.paste(Image.fromarray(np.clip(np.rint(shaded), 0, 255).astype(np.uint8)), (left, top))
    return out


def cpt_text(expression: str, colour: str = "red") -> str:
    """CPT's query: the expression rewritten to name the shade's colour."""
    return f"{expression} is in {colour} color"


def compose(*prompts: VisualPrompt) -> VisualPrompt:
    """Apply prompts left to right to the same box."""

    def composed(image: Image.Image, box: Box) -> Image.Image:
        for prompt in prompts:
            image = prompt(image, box)
        return image

    return composed


VISUAL_PROMPTS: dict[str, VisualPrompt] = {
    "red_circle": red_circle,
    "red_circle_enlarged": partial(red_circle, enlarge=2**0.5),
    "blur": blur_outside,
    "grayscale": grayscale_outside,
    "crop": crop,
    "cpt": colour_shade,
    "red_circle+blur": compose(blur_outside, red_circle),
}


def get_visual_prompt(name: str) -> VisualPrompt:
    if name not in VISUAL_PROMPTS:
        raise FalipError(f"unknown visual prompt {name!r}; choose one of {', '.join(VISUAL_PROMPTS)}")
    return VISUAL_PROMPTS[name]
