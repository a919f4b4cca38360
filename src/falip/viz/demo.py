"""`falip demo`: FALIP on one image, shown: ranked regions, region names, and where [CLS] looks.

With no inputs it makes a test scene of the scene world and uses the embedded toy model, so it runs
offline on a fresh machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..backbones.toy import checkpoint_dir
from ..engine.attention import attention_share
from ..engine.model import FalipModel
from ..errors import FalipError
from ..inputs.images import open_image
from ..inputs.masks import attention_bias, resolve_layers
from ..inputs.regions import to_xyxy
from ..inputs.settings import PAPER

PANEL = 384


@dataclass
class DemoResult:
    """What `run_demo` made: the text, the boxes (xywh, pixels), each box's FALIP score and label, the
    share of [CLS] attention inside the best box (plain, FALIP), the picture's path, and the index of
    the box the expression refers to (generated scenes only, else None)."""

    text: str
    boxes: list[list[float]]
    scores: list[float]  # FALIP score of each box against `text`
    labels: list[str]  # FALIP region classification of each box
    attention_inside: tuple[float, float]  # [CLS] attention mass inside the best box: plain, FALIP
    picture: Path
    expected: int | None  # the box the expression refers to, for a generated scene


def demo_setting(model: FalipModel) -> dict:
    """The settings tuned on validation scenes for referring expressions, when the checkpoint
    ships them (`metrics.json`, as the toy model does); else the paper's defaults.

    Returns:
        {"alpha", "sigma", "layers" (0-based list or None: the last third), "source": why this setting,
        in words, with the measured [CLS] attention shares when `metrics.json` has them}.
    """
    path = checkpoint_dir(model.name) / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
        tuned = metrics.get("tuned", {}).get("rec")
        if tuned:
            whose = "the toy model's" if model.name == "toy" else "this checkpoint's"
            source = f"{whose} setting, tuned on validation scenes ({path.name})"
            share = metrics.get("attention_in_box", {})
            if {"plain CLIP", "FALIP defaults", "FALIP tuned for rec"} <= set(share):
                source += (
                    f": at the paper's alpha {PAPER.alpha:g} FALIP moves this small model's last-layer [CLS] "
                    f"attention on the box only from {share['plain CLIP']:.0%} to "
                    f"{share['FALIP defaults']:.0%}; tuned, to {share['FALIP tuned for rec']:.0%}"
                )
            return {
                "alpha": tuned["alpha"],
                "sigma": tuned["sigma"],
                "layers": tuned["layers"],
                "source": source,
            }
    return {"alpha": PAPER.alpha, "sigma": PAPER.sigma, "layers": None, "source": "the paper's setting"}


def cls_attention_grid(
    model: FalipModel, pixels: torch.Tensor, row: torch.Tensor | None, layers
) -> np.ndarray:
    """Head-averaged last-layer [CLS] attention over the patch grid, with or without a bias row."""
    bias = attention_bias(row[None].to(model.dtype)) if row is not None else None
    probs = model.backbone.visual.cls_attention(pixels, bias, layers if row is not None else ())
    grid = model.backbone.cfg.vision.grid
    return probs[0].float().mean(0)[1:].reshape(grid, grid).numpy()


def demo_scene(model: FalipModel, seed: int = 0):
    """Generated test scene number `seed` at the model's size, the object an expression refers to,
    and that expression: an attribute one where the scene has one (the toy model learnt attributes,
    while position, "the left red circle", it saw only as the odd word in its captions)."""
    from ..datasets.scene_world import make_scene

    scene = make_scene("test", 2_000_000 + seed, model.backbone.cfg.vision.image_size, objects=(3, 4))
    target, expression, _ = sorted(scene.expressions(), key=lambda e: e[2] != "attribute")[0]
    return scene, target, expression


def attention_panels(
    model: FalipModel, picture: Image.Image, row: torch.Tensor, layers, resample=Image.NEAREST
):
    """The picture at panel size, its scale, heat maps of the [CLS] attention plain and with FALIP's
    bias `row` (one colour scale), and the share of each on the row's tokens."""
    pixels = model.pixels(picture).to(model.device, model.dtype)
    plain = cls_attention_grid(model, pixels, None, layers)
    focused = cls_attention_grid(model, pixels, row, layers)
    inside = (row[1:] > 0).reshape(plain.shape).numpy()
    share = (attention_share(plain, inside, 2), attention_share(focused, inside, 2))
    scale = PANEL / max(picture.size)
    shown = picture.resize((round(picture.width * scale), round(picture.height * scale)), resample)
    top = max(plain.max(), focused.max())
    return shown, scale, [heat_overlay(shown, plain, top), heat_overlay(shown, focused, top)], share


def heat_overlay(image: Image.Image, grid: np.ndarray, scale: float) -> Image.Image:
    """The image under a heat map of `grid` (same colour scale for both panels)."""
    g = np.clip(grid / scale, 0, 1)
    up = (
        np.asarray(Image.fromarray((g * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR), np.float32)
        / 255
    )
    colour = np.stack([np.clip(3 * up, 0, 1), np.clip(3 * up - 1, 0, 1), np.clip(3 * up - 2, 0, 1)], -1) * 255
    base = np.asarray(image.convert("L").convert("RGB"), np.float32) * 0.6
    weight = np.sqrt(up)[..., None]
    return Image.fromarray(np.clip(base * (1 - weight) + colour * weight, 0, 255).astype(np.uint8))


def boxes_panel(
    image: Image.Image, boxes, scores, labels, best: int, scale: float, expected: int | None
) -> Image.Image:
    """A copy of `image` with each box drawn and captioned with its score and label: `best` in green,
    the others in white, `expected` (if any) framed in yellow. `boxes` are (x0, y0, x1, y1) in the
    original image's pixels, multiplied by `scale` to land on `image`."""
    panel = image.copy()
    draw = ImageDraw.Draw(panel)
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x0, y0, x1, y1 = (v * scale for v in box)
        colour = (0, 255, 0) if i == best else (255, 255, 255)
        if i == expected:
            draw.rectangle((x0 - 4, y0 - 4, x1 + 4, y1 + 4), outline=(255, 230, 0), width=2)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=3 if i == best else 1)
        draw.text(
            (x0 + 3, y0 + 2), f"{score:.1f} {label}", fill=colour, stroke_width=2, stroke_fill=(0, 0, 0)
        )
    return panel


def run_demo(
    model: FalipModel,
    out: Path,
    image=None,
    boxes: Sequence[Sequence[float]] | None = None,
    text: str | None = None,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    alpha: float | None = None,
    sigma: float | None = None,
    layers: Sequence[int] | None = None,
    box_format: str = "xywh",
) -> DemoResult:
    """Rank `boxes` of `image` against `text`, name each box among `labels`, draw it all to `out`.
    Unset alpha, sigma and layers come from `demo_setting(model)`."""
    if Path(out).suffix.lower() not in PICTURE_SUFFIXES:
        raise FalipError(f"the picture goes to a {'/'.join(PICTURE_SUFFIXES)} file, not {out}")
    tuned = demo_setting(model)
    alpha = tuned["alpha"] if alpha is None else alpha
    sigma = tuned["sigma"] if sigma is None else sigma
    layers = tuned["layers"] if layers is None else layers
    if image is None:
        from ..datasets.scene_world import class_names

        scene, expected, expression = demo_scene(model, seed)
        picture = scene.pil()
        boxes = [list(o.box) for o in scene.objects] if boxes is None else boxes
        text = text or f"a photo of {expression}"
        labels = labels or [f"a photo of a {c}" for c in class_names()]
    else:
        picture = open_image(image)
        expected = None
        if not boxes:
            raise FalipError("give at least one box in `boxes` with an `image`")
        if text is None or not text.strip():
            raise FalipError("give a non-empty `text` with an `image`")
        labels = labels or []
    boxes = [list(map(float, b)) for b in boxes]
    try:
        masked = resolve_layers(layers, model.depth)
    except ValueError as exc:
        raise FalipError(str(exc)) from None
    logits = model.score(
        picture, boxes, [text, *labels], alpha=alpha, sigma=sigma, layers=masked, box_format=box_format
    )
    scores = logits[:, 0].tolist()
    if labels:
        names = [
            labels[i].removeprefix("a photo of ").removeprefix("a ") for i in logits[:, 1:].argmax(1).tolist()
        ]
    else:
        names = [""] * len(boxes)
    best = int(np.argmax(scores))

    row = model.region_rows(picture.size, [boxes[best]], alpha=alpha, sigma=sigma, box_format=box_format)[0]
    shown, scale, heats, share = attention_panels(model, picture, row, masked, Image.NEAREST)
    xyxy = [to_xyxy(b, box_format) for b in boxes]
    panels = [boxes_panel(shown, xyxy, scores, names, best, scale, expected), *heats]
    titles = [
        f"{text!r}: best box green" + (", expected yellow" if expected is not None else ""),
        f"[CLS] attention, plain CLIP: {100 * share[0]:.0f}% in the box",
        f"with FALIP on the green box: {100 * share[1]:.0f}% in the box",
    ]
    sheet = Image.new("RGB", (3 * shown.width + 20, shown.height + 28), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (panel, title) in enumerate(zip(panels, titles)):
        sheet.paste(panel, (i * (shown.width + 10), 28))
        draw.text((i * (shown.width + 10) + 2, 8), title, fill=(0, 0, 0))
    save_picture(sheet, Path(out))
    return DemoResult(text, boxes, scores, names, share, Path(out), expected)


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def save_picture(picture: Image.Image, out: Path) -> None:
    """Save a picture where asked; a name that is no picture file, or a folder that cannot be
    written, is a one-line error."""
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise FalipError(f"the picture goes to a {'/'.join(PICTURE_SUFFIXES)} file, not {out}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        picture.save(out)
    except OSError as exc:
        raise FalipError(f"cannot write {out}: {exc.strerror or exc}") from None
