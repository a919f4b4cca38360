"""`falip explain`: what FALIP and the pixel prompts do to CLIP's attention, as arrays and pictures
(the paper's Figs. 2, 6, 10 and 15).

- `attention.png` (Fig. 2): the [CLS] attention map of one layer (mean over heads) for the plain
  image, each pixel prompt's image and FALIP, with the share of attention on the box's tokens;
- `heads.png` (Fig. 6, left): one head's [CLS] attention for the original and the prompted image;
- `contributions.png` (Fig. 6, middle), given a text: each token's contribution to the image-text
  score through the unleashed layers' heads, for the original, prompted and unleashed image;
- `foveal_mask.png` (Fig. 10): FALIP's bias on the box for a grid of alpha and sigma;
- `relevance.png` (Fig. 15): an explanation map, plain CLIP against FALIP: Chefer et al.'s
  gradient-weighted attention relevance for the text, as the paper (over every layer; the
  authors' code keeps the last), or attention rollout when no text is given.
All maps are drawn over the image the model sees (after its preprocessing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.attention import attention_share
from ..engine.decompose import attention_rollout, decompose, gradient_relevance, to_joint
from ..engine.model import FalipModel
from ..errors import FalipError
from ..inputs.images import open_image
from ..inputs.masks import attention_bias
from ..inputs.regions import to_xyxy
from ..inputs.settings import PAPER
from ..tasks.visual_prompts import get_visual_prompt
from .pictures import Panel, heat_panels

ALPHAS = (0.05, 0.2, 0.6)
SIGMAS = (1.0, 2.0, 100.0)


@dataclass
class Explanation:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # each (grid, grid) over the model's tokens
    titles: dict[str, str] = field(default_factory=dict)
    views: dict[str, object] = field(
        default_factory=dict
    )  # the image under an array's panel, where not the original
    pictures: list[Path] = field(default_factory=list)


def _grid(row: torch.Tensor, grid: int) -> np.ndarray:
    """A (T,) row over [CLS] and the patches -> the (grid, grid) patch map."""
    return row[1:].float().reshape(grid, grid).cpu().numpy()


@torch.no_grad()
def explain(
    model: FalipModel,
    image,
    box: Sequence[float],
    *,
    text: str | None = None,
    prompts: Sequence[str] = ("red_circle", "blur", "red_circle+blur"),
    layer: int = -1,
    head: tuple[int, int] | None = None,
    alpha: float = PAPER.alpha,
    sigma: float = PAPER.sigma,
    layers: Sequence[int] | None = None,
    unleash_layers: Sequence[int] | None = None,
    out: Path | None = None,
) -> Explanation:
    """Arrays (and, with `out`, PNGs) explaining one box (`xywh`, original pixels) of one image.
    `head`: the (layer, head) of the head picture, 0-based; by default the head the first prompt moves
    most."""
    model.needs_cls("falip explain")
    if not prompts:
        raise FalipError("give at least one pixel prompt")
    img = open_image(image)
    visual, grid = model.backbone.visual, model.backbone.cfg.vision.grid
    depth = model.depth
    layer = _index(layer, depth, "layer")
    masked = model.masked_layers(layers)
    edited = model.masked_layers(unleash_layers)
    row = model.region_rows(img.size, [box], alpha=alpha, sigma=sigma)
    inside_row = model.region_rows(img.size, [box], alpha=1.0, sigma=sigma)[0, 1:] > 0
    rows_idx, cols_idx = np.nonzero(inside_row.reshape(grid, grid).numpy())
    box_tokens = (int(rows_idx.min()), int(rows_idx.max()), int(cols_idx.min()), int(cols_idx.max()))
    on_box = np.zeros((grid, grid), dtype=bool)  # the box's token rectangle, corners included
    on_box[box_tokens[0] : box_tokens[1] + 1, box_tokens[2] : box_tokens[3] + 1] = True
    view = model.preprocessing.view(img)
    geo = model.preprocessing.geometry(*img.size)
    x0, y0, x1, y1 = to_xyxy(box)
    view_box = (geo.map_x(x0), geo.map_y(y0), geo.map_x(x1), geo.map_y(y1))
    pixels = model.pixels(img).to(model.device, model.dtype)
    result = Explanation()

    def add(name: str, array: np.ndarray, title: str, shown=None) -> None:
        result.arrays[name], result.titles[name] = array, title
        if shown is not None:
            result.views[name] = model.preprocessing.view(shown)

    # Fig. 2: where [CLS] looks, plain, under each pixel prompt, and with FALIP.
    bias = attention_bias(row.to(model.dtype))
    plain = decompose(visual, pixels, token_layers=edited)
    edited_images = {name: get_visual_prompt(name)(img, to_xyxy(box)) for name in prompts}
    prompted = {
        name: decompose(visual, model.pixels(e).to(model.device, model.dtype), token_layers=edited)
        for name, e in edited_images.items()
    }
    falip = decompose(visual, pixels, bias, masked)
    for name, run in (("plain", plain), *prompted.items(), ("falip", falip)):
        attention = _grid(run.attention[0, layer].mean(0), grid)
        label = "plain CLIP" if name == "plain" else ("FALIP" if name == "falip" else name)
        add(
            f"attention_{name}",
            attention,
            f"{label}: {100 * attention_share(attention, on_box, 2):.0f}% on the box",
            edited_images.get(name),
        )

    # Fig. 6: one head's attention, and the tokens' contributions through the edited layers' heads.
    first = prompts[0]
    if head is None:
        change = (prompted[first].heads - plain.heads)[0].norm(dim=-1)  # (L, H)
        head = tuple(int(i) for i in np.unravel_index(int(change.argmax()), tuple(change.shape)))
    head_layer, head_index = _index(head[0], depth, "head layer"), head[1]
    if not 0 <= head_index < visual.cfg.heads:
        raise FalipError(f"head {head_index} does not exist: layers have {visual.cfg.heads} heads")
    for name, run in (("original", plain), (first, prompted[first])):
        attention = _grid(run.attention[0, head_layer, head_index], grid)
        add(
            f"head_{name}",
            attention,
            f"layer {head_layer} head {head_index}, {name}: "
            f"{100 * attention_share(attention, on_box, 2):.0f}% on the box",
            edited_images.get(name),
        )
    if text is not None:
        text_unit = F.normalize(model.encode_text([text]).float(), dim=-1)[0]
        delta = sum(prompted[first].heads[:, l] - plain.heads[:, l] for l in edited).sum(1)  # (1, D)
        runs = {
            "original": ({l: plain.tokens[l] for l in edited}, plain.final),
            first: ({l: prompted[first].tokens[l] for l in edited}, prompted[first].final),
            "unleashed": (
                {l: 2 * prompted[first].tokens[l] - plain.tokens[l] for l in edited},
                prompted[first].final + delta,
            ),
        }
        for name, (tokens, residual) in runs.items():
            per_token = sum(to_joint(visual, t, residual).float() for t in tokens.values()).sum(1)[
                0
            ]  # (T, E)
            contribution = _grid(per_token @ text_unit, grid)
            add(
                f"contribution_{name}",
                contribution,
                f"{name}: {contribution.sum():+.2f} in all",
                edited_images.get(name),
            )

    # Fig. 10: the foveal bias for a grid of alpha and sigma.
    for a in ALPHAS:
        for s in SIGMAS:
            mask = _grid(model.region_rows(img.size, [box], alpha=a, sigma=s)[0], grid)
            add(f"mask_alpha{a:g}_sigma{s:g}", mask, f"alpha {a:g}, sigma {s:g}: peak {mask.max():.3f}")

    # Fig. 15: an explanation map, plain against FALIP: Chefer et al.'s relevance for the text, or
    # attention rollout when there is no text.
    for name, (b, bl) in (("plain", (None, ())), ("falip", (bias, masked))):
        if text is not None:
            relevance = _grid(gradient_relevance(visual, pixels, text_unit, b, bl)[0], grid)
        else:
            relevance = _grid(attention_rollout(visual, pixels, b, bl)[0], grid)
        label = "plain CLIP" if name == "plain" else "FALIP"
        add(
            f"relevance_{name}",
            relevance,
            f"{label}: {100 * attention_share(relevance, on_box, 2):.0f}% on the box",
        )

    if out is not None:
        result.pictures = _draw(result, view, view_box, Path(out), layer, text)
    return result


def _index(value: int, depth: int, what: str) -> int:
    if not -depth <= int(value) < depth:
        raise FalipError(f"{what} {value} does not exist: the model has {depth} layers (0..{depth - 1})")
    return int(value) % depth


def _draw(result: Explanation, view, box, out: Path, layer: int, text: str | None) -> list[Path]:
    """The PNGs, each a row of panels over the image the model sees."""

    def panels(prefix: str, diverging: bool = False, smooth: bool = True) -> list[Panel]:
        return [
            Panel(result.titles[k], v, diverging, result.views.get(k), smooth)
            for k, v in result.arrays.items()
            if k.startswith(prefix)
        ]

    out.mkdir(parents=True, exist_ok=True)
    pictures = [
        heat_panels(
            view,
            panels("attention_"),
            out / "attention.png",
            box=box,
            title=f"[CLS] attention, layer {layer} (0-based), mean over heads",
        ),
        heat_panels(
            view,
            panels("head_"),
            out / "heads.png",
            box=box,
            title="[CLS] attention of one head (0-based layer and head)",
        ),
        heat_panels(
            view,
            panels("mask_", smooth=False),
            out / "foveal_mask.png",
            box=box,
            columns=len(SIGMAS),
            title="FALIP's bias on the [CLS] row (same colour scale)",
        ),
        heat_panels(
            view,
            panels("relevance_"),
            out / "relevance.png",
            box=box,
            title=f"relevance of each token for {text!r} (Chefer et al.)"
            if text
            else "attention rollout of [CLS] (Abnar & Zuidema)",
        ),
    ]
    if text is not None:
        pictures.insert(
            2,
            heat_panels(
                view,
                panels("contribution_", diverging=True),
                out / "contributions.png",
                box=box,
                title=f"each token's contribution to the image feature . text({text!r}), through the "
                "unleashed layers' heads",
            ),
        )
    return pictures
