"""Visual prompts that edit pixels: the baselines FALIP is compared with in the paper, drawn as the
FALIP authors' code (pumpkin805/FALIP `executor.py`, itself ReCLIP's) draws them.

Each prompt is a function `(image, box, *, box_format="xywh") -> image` on PIL RGB images, boxes in
pixels of the original image as everywhere in falip's API: `[x, y, w, h]` (COCO), or corners
`[x0, y0, x1, y1]` with `box_format="xyxy"`; the registry `VISUAL_PROMPTS` names them, and `compose`
chains them.

| name | what | the authors' values |
| --- | --- | --- |
| `red_circle` | RedCircle: a red ellipse inscribed in the box | (255, 0, 0), `max(1, int(max(W, H) / 200))` px wide |
| `red_circle_e<N>` | the same, the box first grown by N px on all four sides and clipped to the image (Table 14, Fig. 12) | N = 5 ... 200 |
| `blur` | ReCLIP's blur: Gaussian blur of std 100 px everywhere but the box | std 100 on the original image |
| `blur_ellipse` | Table 2's "Blur": the same blur everywhere but the box's inscribed ellipse | std 100 |
| `red_circle+blur` | the authors' `circle` representation (it hard-codes `blur = True`): `blur_ellipse`, then the red ellipse | as above |
| `cpt` | CPT's shade as ReCLIP adapts it: the box under (240, 0, 30) at alpha 127; the text gets "is in red color." | |
| `crop` | the box alone | |
| `grayscale` | grey everywhere but the box (ours, not in the paper) | |

PIL's `GaussianBlur(radius)` takes the standard deviation as its radius, as the authors call it.
The authors' line width `int(max(W, H) / 200)` is 0 below 200 px, and PIL then draws no outline at
all; we draw at least 1 px. COCO, CUB and the other data sets' images are larger, so there the
width is theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import FalipError
from ..inputs.regions import to_xyxy

Box = tuple[float, float, float, float]
VisualPrompt = Callable[..., Image.Image]  # (image, box, *, box_format="xywh") -> image

RED = (255, 0, 0)
BLUR_STD = 100.0
CPT_TINT = (240, 0, 30)
CPT_ALPHA = 127
TABLE14_ENLARGEMENTS = (5, 10, 20, 30, 40, 50, 100, 150, 200)


def _pixel_box(image: Image.Image, box: Box) -> tuple[int, int, int, int]:
    """The box's pixels, clipped to the image; an empty box is an error."""
    x0, y0, x1, y1 = (float(v) for v in box)
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(image.width, int(np.ceil(x1))), min(image.height, int(np.ceil(y1)))
    if right <= left or bottom <= top:
        raise FalipError(f"box {tuple(box)} covers no pixel of the {image.width}x{image.height} image")
    return left, top, right, bottom


def enlarge_box(image: Image.Image, box: Box, pixels: float) -> Box:
    """The box grown by `pixels` on all four sides and clipped to the image (the authors' `enlarge_boxes`)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        max(x0 - pixels, 0.0),
        max(y0 - pixels, 0.0),
        min(x1 + pixels, float(image.width)),
        min(y1 + pixels, float(image.height)),
    )


def circle_width(image: Image.Image) -> int:
    """The authors' RedCircle line width: `int(max(W, H) / 200)` pixels, at least 1."""
    return max(1, int(max(image.size) / 200))


def red_circle(
    image: Image.Image,
    box: Box,
    colour=RED,
    width: int | None = None,
    enlarge: float = 0.0,
    *,
    box_format: str = "xywh",
) -> Image.Image:
    """RedCircle (Shtedritski et al., 2023): a red ellipse inscribed in the box, `width` pixels wide
    (default the authors' `circle_width`); `enlarge` grows the box by that many pixels first.

    Args:
        image: PIL RGB image.
        box: `[x, y, w, h]` in pixels, or corners with `box_format="xyxy"`.
    Raises:
        FalipError: a box that is not 4 finite numbers, or an unknown `box_format`.
    """
    box = to_xyxy(box, box_format)
    if enlarge:
        box = enlarge_box(image, box, enlarge)
    out = image.copy()
    ImageDraw.Draw(out).ellipse(
        tuple(float(v) for v in box), outline=tuple(colour), width=width or circle_width(image)
    )
    return out


def _blurred_outside(image: Image.Image, keep: Image.Image, std: float) -> Image.Image:
    """The image blurred with a Gaussian of standard deviation `std` pixels where `keep` (an L mask) is 0."""
    blurred = image.filter(ImageFilter.GaussianBlur(radius=std))
    blurred.paste(image, mask=keep)
    return blurred


def blur_outside(
    image: Image.Image, box: Box, std: float = BLUR_STD, *, box_format: str = "xywh"
) -> Image.Image:
    """ReCLIP's blur: everything but the box blurred with a Gaussian of std `std` pixels (default 100).
    `box`: `[x, y, w, h]` in pixels, or corners with `box_format="xyxy"`; a box covering no pixel is a
    `FalipError`."""
    box = to_xyxy(box, box_format)
    left, top, right, bottom = _pixel_box(image, box)
    keep = Image.new("L", image.size, 0)
    keep.paste(255, (left, top, right, bottom))
    return _blurred_outside(image, keep, std)


def blur_outside_ellipse(
    image: Image.Image, box: Box, std: float = BLUR_STD, *, box_format: str = "xywh"
) -> Image.Image:
    """Table 2's "Blur": everything but the box's inscribed ellipse blurred (std `std` pixels).
    `box`: `[x, y, w, h]` in pixels, or corners with `box_format="xyxy"`."""
    box = to_xyxy(box, box_format)
    _pixel_box(image, box)
    keep = Image.new("L", image.size, 0)
    ImageDraw.Draw(keep).ellipse(tuple(float(v) for v in box), fill=255)
    return _blurred_outside(image, keep, std)


def grayscale_outside(image: Image.Image, box: Box, *, box_format: str = "xywh") -> Image.Image:
    """Grey everywhere but the box (ours: not one of the paper's prompts). `box`: `[x, y, w, h]` in
    pixels, or corners with `box_format="xyxy"`."""
    box = to_xyxy(box, box_format)
    left, top, right, bottom = _pixel_box(image, box)
    out = image.convert("L").convert("RGB")
    out.paste(image.crop((left, top, right, bottom)), (left, top))
    return out


def crop(image: Image.Image, box: Box, margin: float = 0.0, *, box_format: str = "xywh") -> Image.Image:
    """The box alone, grown by `margin` (a fraction of its size) on every side. `box`: `[x, y, w, h]` in
    pixels, or corners with `box_format="xyxy"`."""
    x0, y0, x1, y1 = to_xyxy(box, box_format)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    return image.crop(_pixel_box(image, (x0 - dx, y0 - dy, x1 + dx, y1 + dy)))


def colour_shade(
    image: Image.Image, box: Box, colour=CPT_TINT, alpha: int = CPT_ALPHA, *, box_format: str = "xywh"
) -> Image.Image:
    """CPT (Yao et al., 2021) as ReCLIP adapts it: the box's pixels alpha-composited under `colour`
    at `alpha` of 255 (default (240, 0, 30) at 127); pair with `cpt_text`. `box`: `[x, y, w, h]` in
    pixels, or corners with `box_format="xyxy"`."""
    box = to_xyxy(box, box_format)
    left, top, right, bottom = _pixel_box(image, box)
    overlay = Image.new("RGBA", image.size, (*colour, 0))
    overlay.paste((*colour, alpha), (left, top, right, bottom))
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def cpt_text(expression: str, colour: str = "red") -> str:
    """CPT's query: the expression rewritten to name the shade's colour, as ReCLIP's code words it."""
    return f"{expression} is in {colour} color."


def compose(*prompts: VisualPrompt) -> VisualPrompt:
    """Apply prompts left to right to the same box (in the `box_format` the composed prompt is given)."""

    def composed(image: Image.Image, box: Box, *, box_format: str = "xywh") -> Image.Image:
        for prompt in prompts:
            image = prompt(image, box, box_format=box_format)
        return image

    return composed


VISUAL_PROMPTS: dict[str, VisualPrompt] = {
    "red_circle": red_circle,
    **{f"red_circle_e{e}": partial(red_circle, enlarge=e) for e in TABLE14_ENLARGEMENTS},
    "blur": blur_outside,
    "blur_ellipse": blur_outside_ellipse,
    "red_circle+blur": compose(blur_outside_ellipse, red_circle),
    "grayscale": grayscale_outside,
    "crop": crop,
    "cpt": colour_shade,
}


def get_visual_prompt(name: str) -> VisualPrompt:
    """The visual prompt registered as `name` in `VISUAL_PROMPTS`. Raises FalipError for an unknown name."""
    if name not in VISUAL_PROMPTS:
        raise FalipError(f"unknown visual prompt {name!r}; choose one of {', '.join(VISUAL_PROMPTS)}")
    return VISUAL_PROMPTS[name]
