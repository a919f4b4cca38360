"""Fig. 5 (right): point-cloud depth views under [CLS] attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .pictures import Panel, heat_panels


def draw_views(maps: dict, path: Path, title: str) -> Path:
    """Fig. 5 right: each view's depth map under its [CLS] attention, plain (top row) and FALIP
    (bottom row), the foreground box outlined, the share of attention on it in each title."""
    from PIL import Image

    pixels = maps["pixels"][:, 0].numpy()
    views = [
        Image.fromarray(
            (255 * (p - p.min()) / max(float(p.max() - p.min()), 1e-12)).astype(np.uint8)
        ).convert("RGB")
        for p in pixels
    ]
    panels = []
    for label in ("plain", "falip"):
        for k, view in enumerate(maps["views"]):
            grid, inside = maps[label][k], maps["inside"][k]
            share = float((grid * inside).sum() / grid.sum())
            name = "plain CLIP" if label == "plain" else "FALIP"
            panels.append(
                Panel(
                    f"view {view + 1}, {name}: {100 * share:.0f}%", grid, view=views[k], box=maps["boxes"][k]
                )
            )
    return heat_panels(
        views[0],
        panels,
        path,
        title=title + ": [CLS] attention on each depth view, last layer (each panel its own scale)",
        columns=len(maps["views"]),
        shared_scale=False,
    )
