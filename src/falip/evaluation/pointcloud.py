"""`falip eval pointcloud`: PointCLIP's zero-shot recognition with and without foveal attention, one
cloud at a time, resumable like `falip eval rec|cls`.

Each record holds, per `<model>:<method>`, the prediction, top-1 and top-5, and the share of the last
layer's [CLS] attention on the views' foreground tokens; `attention.json` averages that share.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import CloudDataset
from ..errors import FalipError
from ..inputs import checks
from ..tasks.classify import top_k
from ..tasks.pointcloud import (
    CLOUD_METHODS,
    class_text_features,
    cloud_scores,
    cloud_views,
    foreground_attention,
    search_view_weights,
    view_attention,
    view_features,
)
from .distributed import single_process
from .runner import RunConfig
from .store import ResultStore
from .summary import write_summary


def _check(config: RunConfig) -> None:
    if not config.methods:
        raise FalipError("no method given")
    bad = [m for m in config.methods if m not in CLOUD_METHODS]
    if bad:
        raise FalipError(f"point clouds take the methods {', '.join(CLOUD_METHODS)}, not {', '.join(bad)}")


def _options(config: RunConfig) -> dict:
    return {
        "region": config.cloud_region,
        "input_mode": config.cloud_input,
        "alpha": config.alpha,
        "sigma": config.sigma,
        "layers": config.layers,
        "form": config.form,
    }


def _views(data: CloudDataset, example, config: RunConfig):
    return cloud_views(data.cloud(example), config.cloud_projection)


@torch.no_grad()
def search_weights(
    models: dict, data: CloudDataset, config: RunConfig, *, limit: int | None = None, progress: bool = True
) -> dict[str, list[float]]:
    """View weights per `<model>:<method>`, searched on `data` (a validation split, never the test split)."""
    _check(config)
    examples = data.examples[:limit]
    per_view = {f"{n}:{m}": [] for n in models for m in config.methods}
    texts = {n: class_text_features(model, data.classes, config.templates) for n, model in models.items()}
    for example in tqdm(examples, desc="view-weight search", unit="cloud", disable=not progress):
        depth, foreground = _views(data, example, config)
        for name, model in models.items():
            for method in config.methods:
                per_view[f"{name}:{method}"].append(
                    view_features(model, depth, method, foreground=foreground, **_options(config))
                    @ texts[name].T
                )
    labels = [e.label for e in examples]
    return {system: search_view_weights(torch.stack(scores), labels) for system, scores in per_view.items()}


def run_pointcloud(
    models: dict,
    data: CloudDataset,
    config: RunConfig,
    out: Path,
    *,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    pictures: int = 0,
    draw: Callable[[dict, Path, str], Path] | None = None,
) -> dict:
    """Top-1 and top-5 for every (model, method); with `pictures` and `draw`, Fig. 5's attention picture of
    the first that many clouds in `out/pictures/` (`draw(maps, path, title)`, e.g.
    `falip.viz.pointclouds.draw_views`:
    the drawing layer sits above this one, so the caller hands it in)."""
    _check(config)
    single_process("falip eval pointcloud")
    limit = checks.optional_count("limit", limit)
    pictures = checks.count("pictures", pictures, minimum=0)
    store = ResultStore(out, asdict(config), overwrite)
    try:
        done = store.done
        texts = {n: class_text_features(model, data.classes, config.templates) for n, model in models.items()}
        weights = config.view_weights or {}
        for number, example in enumerate(
            tqdm(data.examples[:limit], desc="clouds", unit="cloud", disable=not progress)
        ):
            if example.key in done:
                continue
            depth, foreground = _views(data, example, config)
            results = {}
            for index, (name, model) in enumerate(models.items()):
                maps = view_attention(model, depth, foreground=foreground, **_options(config))
                plain_share, falip_share = foreground_attention(maps)
                if draw is not None and index == 0 and number < pictures:
                    key = example.key.replace("/", "_").replace(":", "_")
                    draw(
                        maps,
                        Path(out) / "pictures" / f"{key}.png",
                        f"{example.key} ({data.classes[example.label]}), {name}",
                    )
                for method in config.methods:
                    system = f"{name}:{method}"
                    feats = maps["features"][method]  # the pass that gave the attention
                    scores = cloud_scores(feats, texts[name], weights.get(system))
                    hits = top_k(scores[None], [example.label])
                    share = falip_share if method == "falip" else plain_share
                    results[system] = {
                        "pred": int(scores.argmax()),
                        "top1": bool(hits[1][0]),
                        "top5": bool(hits[5][0]),
                        "foreground_attention": None if np.isnan(share) else share,
                    }
            store.add([{"key": example.key, "label": example.label, "results": results}])
        summary = write_summary(out, store.records)
        write_attention(out, store.records)
        return summary
    finally:
        store.close()


def write_attention(out: Path, records: list[dict]) -> dict[str, float]:
    """`attention.json`: per system, the mean share of [CLS] attention on the foreground."""
    shares: dict[str, list[float]] = {}
    for record in records:
        for system, result in record["results"].items():
            if result.get("foreground_attention") is not None:
                shares.setdefault(system, []).append(result["foreground_attention"])
    means = {system: float(np.mean(values)) for system, values in shares.items()}
    (Path(out) / "attention.json").write_text(json.dumps(means, indent=2) + "\n")
    return means
