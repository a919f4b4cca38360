"""3D point-cloud recognition with foveal attention (the paper's Sec. 3.3.3, Table 3, Fig. 5):
PointCLIP's six depth views, each view's foreground as the region, and

    Score_i = sum_j beta_j V(x_j, M_j) . T(t_i),

V the unit image feature of view j under its foveal mask M_j (no mask for "plain"), T the unit text
feature of class i in the prompt "point cloud depth map of a {}." (PointCLIP's). The views of a
cloud go through the engine as one batch.

Input values: PointCLIP's zero-shot code feeds each depth map, repeated to 3 channels and upsampled
bilinearly to the model's size, *as it is*: raw depths (about 0.6 to 2.6, background 0), without
CLIP's mean and std. That is the default ("pointclip"); "clip" instead scales each view to [0, 1]
by its largest depth and applies the checkpoint's normalisation. The region is the foreground's
bounding box in the upsampled view ("box", default) or the foreground mask itself ("mask"); a view
with no point keeps no bias. The view weights beta are equal by default; `search_view_weights`
picks them on a validation split, as PointCLIP's search does (never run it on the test split).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.attention import attention_share
from ..engine.decompose import decompose
from ..errors import FalipError
from ..inputs import checks
from ..inputs.masks import attention_bias
from ..inputs.settings import PAPER
from .projection import depth_maps, foreground_box, realistic_maps

CLOUD_PROMPT = "point cloud depth map of a {}."
INPUT_MODES = ("pointclip", "clip")
REGIONS = ("box", "mask")
CLOUD_METHODS = ("plain", "falip")
PROJECTIONS = ("pointclip", "realistic")
BETA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def cloud_views(points: np.ndarray, projection: str = "pointclip") -> tuple[np.ndarray, np.ndarray]:
    """A cloud's views and their foreground masks: PointCLIP's six depth maps (background 0), or
    PointCLIP V2's ten realistic projections ("realistic": background 1, nearer surfaces darker)."""
    if projection == "pointclip":
        maps = depth_maps(points)
        return maps, maps > 0
    if projection == "realistic":
        return realistic_maps(points)
    raise FalipError(f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}")


def view_pixels(
    depth: np.ndarray, size: int, input_mode: str = "pointclip", mean=None, std=None
) -> torch.Tensor:
    """(V, 3, size, size) model inputs of (V, R, R) depth maps."""
    if input_mode not in INPUT_MODES:
        raise FalipError(
            f"unknown point-cloud input mode {input_mode!r}; choose one of {', '.join(INPUT_MODES)}"
        )
    maps = torch.from_numpy(np.ascontiguousarray(depth, np.float32))[:, None]
    if input_mode == "clip":
        peak = maps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
        maps = maps / peak
    views = F.interpolate(maps.repeat(1, 3, 1, 1), size=(size, size), mode="bilinear", align_corners=True)
    if input_mode == "clip":
        views = (views - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return views


def view_regions(depth: np.ndarray, size: int, region: str = "box") -> list:
    """Each view's foreground (non-zero pixels of `depth`, or a boolean foreground mask) as a region
    in the model's input pixels: an `xywh` box, or an (size, size) mask; None for a view no point reached."""
    if region not in REGIONS:
        raise FalipError(f"unknown point-cloud region {region!r}; choose one of {', '.join(REGIONS)}")
    scale = size / depth.shape[-1]
    out = []
    for view in depth:
        box = foreground_box(view)
        if box is None:
            out.append(None)
        elif region == "box":
            x0, y0, x1, y1 = (v * scale for v in box)
            out.append([x0, y0, x1 - x0, y1 - y0])
        else:
            mask = F.interpolate(
                torch.from_numpy((view > 0).astype(np.float32))[None, None], size=(size, size), mode="nearest"
            )
            out.append(mask[0, 0].numpy() > 0)
    return out


@torch.no_grad()
def view_features(
    model,
    depth: np.ndarray,
    method: str,
    *,
    region: str = "box",
    input_mode: str = "pointclip",
    alpha: float = PAPER.alpha,
    sigma: float = PAPER.sigma,
    layers=None,
    form: str = "cls",
    foreground: np.ndarray | None = None,
) -> torch.Tensor:
    """Unit features (V, D) of a cloud's views, plain or with FALIP on each view's foreground
    (`foreground` masks; by default the non-zero pixels)."""
    if method not in CLOUD_METHODS:
        raise FalipError(f"point clouds take the methods {', '.join(CLOUD_METHODS)}, not {method!r}")
    prep = model.preprocessing
    pixels = view_pixels(depth, prep.size, input_mode, prep.mean, prep.std)
    mask = depth > 0 if foreground is None else foreground
    regions = view_regions(mask, prep.size, region) if method == "falip" else [None] * len(depth)
    feats = model.encode_prepared(pixels, regions, alpha=alpha, sigma=sigma, layers=layers, form=form)
    return F.normalize(feats.float(), dim=-1)


@torch.no_grad()
def class_text_features(model, classes: Sequence[str], template: str = CLOUD_PROMPT) -> torch.Tensor:
    """Unit (C, D) text features of the class names (underscores as spaces) in the template."""
    checks.template(template, "point-cloud template")
    texts = [template.format(name.replace("_", " ")) for name in classes]
    return F.normalize(model.encode_text(texts).float(), dim=-1)


def cloud_scores(
    view_feats: torch.Tensor, text_feats: torch.Tensor, beta: Sequence[float] | None = None
) -> torch.Tensor:
    """(C,) `sum_j beta_j V_j . T_i`; beta equal (1 each) by default."""
    per_view = view_feats @ text_feats.T  # (V, C)
    weights = torch.ones(len(view_feats)) if beta is None else torch.as_tensor(beta, dtype=per_view.dtype)
    if weights.shape != (len(view_feats),):
        raise FalipError(f"one view weight per view: {len(view_feats)} views, got {list(weights.shape)}")
    return weights @ per_view


def search_view_weights(
    per_view: torch.Tensor, labels: Sequence[int], grid: Sequence[float] = BETA_GRID
) -> list[float]:
    """PointCLIP's view-weight search: the weights in `grid`^V with the best top-1 on per-view scores
    (N, V, C) of a *validation* split (ties: the first found, equal weights tried first)."""
    labels_t = torch.as_tensor(list(labels))
    views = per_view.shape[1]
    best, chosen = -1.0, [1.0] * views
    candidates = itertools.chain([tuple([1.0] * views)], itertools.product(grid, repeat=views))
    for weights in candidates:
        if not any(weights):
            continue
        accuracy = (
            ((torch.as_tensor(weights, dtype=per_view.dtype) @ per_view).argmax(-1) == labels_t)
            .float()
            .mean()
            .item()
        )
        if accuracy > best:
            best, chosen = accuracy, list(weights)
    return chosen


@torch.no_grad()
def view_attention(
    model,
    depth: np.ndarray,
    *,
    input_mode: str = "pointclip",
    alpha: float = PAPER.alpha,
    sigma: float = PAPER.sigma,
    layers=None,
    form: str = "cls",
    region: str = "box",
    foreground: np.ndarray | None = None,
) -> dict:
    """One pass per method over a cloud's views that gives both their features and their attention.

    Each view goes through the ViT once plain and once with FALIP on its foreground (`region` "box" or
    "mask"; views without points get no bias, as in `view_features`), decomposed (`falip.engine.decompose`)
    so that the same pass yields the [CLS] state (the features, through `ln_post` and the projection) and
    the last layer's [CLS] attention.

    Returns:
        {"features": {"plain", "falip": unit (V, D)}, "views": indices of the views with points,
        "plain", "falip": their attention (V', grid, grid) (mean over heads), "inside": (V', grid, grid)
        bool (the foreground box's tokens), "boxes": xyxy boxes in input pixels, "pixels": the views' inputs}.
        A SigLIP has no [CLS]: its features come from `view_features` and it has no maps.
    """
    prep = model.preprocessing
    pixels = view_pixels(depth, prep.size, input_mode, prep.mean, prep.std)
    mask = depth > 0 if foreground is None else foreground
    boxes_all = view_regions(mask, prep.size, "box")
    grid = model.backbone.cfg.vision.grid
    keep = [] if model.is_siglip else [i for i, r in enumerate(boxes_all) if r is not None]
    empty = np.zeros((0, grid, grid))
    maps = {
        "views": keep,
        "plain": empty,
        "falip": empty,
        "inside": empty.astype(bool),
        "boxes": [],
        "pixels": pixels[keep],
    }
    options = dict(input_mode=input_mode, alpha=alpha, sigma=sigma, layers=layers, form=form, region=region)
    if model.is_siglip:
        maps["features"] = {
            m: view_features(model, depth, m, foreground=foreground, **options) for m in CLOUD_METHODS
        }
        return maps
    regions = view_regions(mask, prep.size, region)
    rows = model.prepared_rows(regions, alpha=alpha, sigma=sigma)  # zero rows for views without points
    visual = model.backbone.visual
    inputs = pixels.to(model.device, model.dtype)
    passes = {
        "plain": decompose(visual, inputs),
        "falip": decompose(
            visual, inputs, attention_bias(rows.to(model.dtype), form), model.masked_layers(layers)
        ),
    }
    maps["features"] = {m: F.normalize(visual.head(d.final).float(), dim=-1) for m, d in passes.items()}
    if keep:
        shape = (len(keep), grid, grid)
        for name, d in passes.items():
            maps[name] = d.attention[keep, -1].mean(1)[:, 1:].float().reshape(shape).numpy()
        inside = model.prepared_rows([boxes_all[i] for i in keep], alpha=1.0)[:, 1:] > 0
        maps["inside"] = inside.reshape(shape).numpy()
        maps["boxes"] = [[x, y, x + w, y + h] for x, y, w, h in (boxes_all[i] for i in keep)]
    return maps


def foreground_attention(maps: dict) -> tuple[float, float]:
    """Mean over the views with points of the [CLS] attention share on the foreground box's tokens:
    plain CLIP, FALIP (from `view_attention`); NaN without such views."""
    if not maps["views"]:
        return float("nan"), float("nan")
    return tuple(float(attention_share(maps[k], maps["inside"], 2).mean()) for k in ("plain", "falip"))
