"""Pictures people look at instead of numbers: heat maps over the image the model sees, and grids
of attention heads. Drawn with matplotlib's object API (`Figure`, no pyplot state and no backend
chosen on import: a figure saves itself through Agg, no display needed), saved as PNG.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image


@dataclass
class Panel:
    """One heat map over the image: a (grid, grid) array, its title, and the colour scale it shares."""

    title: str
    grid: np.ndarray
    diverging: bool = False  # signed values (contributions): a blue-white-red scale centred on 0
    view: Image.Image | None = None  # the image under this panel, if not the shared one (a prompted image)
    smooth: bool = True  # bilinear upsampling; False shows each token as a block
    box: Sequence[float] | None = None  # this panel's box, if not the shared one


def heat_panels(
    view: Image.Image,
    panels: Sequence[Panel],
    path: Path,
    *,
    box: Sequence[float] | None = None,
    title: str = "",
    columns: int | None = None,
    shared_scale: bool = True,
) -> Path:
    """The image under each panel's heat map (upsampled from the token grid), with a colour bar, the
    box outlined (`x0, y0, x1, y1` in the view's pixels); one PNG."""
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(3.4 * columns, 3.5 * rows + (0.4 if title else 0)))
    axes = fig.subplots(rows, columns, squeeze=False)
    size = view.size[0]
    plain = [p.grid for p in panels if not p.diverging]
    top = max((float(g.max()) for g in plain), default=1.0)
    span = max((float(np.abs(p.grid).max()) for p in panels if p.diverging), default=1.0)
    for ax, panel in zip(axes.flat, panels):
        ax.imshow((panel.view or view).convert("L"), cmap="gray", extent=(0, size, size, 0))
        if panel.diverging:
            limit = span if shared_scale else float(np.abs(panel.grid).max())
            shown = ax.imshow(
                panel.grid,
                cmap="coolwarm",
                vmin=-limit,
                vmax=limit,
                alpha=0.6,
                extent=(0, size, size, 0),
                interpolation="bilinear" if panel.smooth else "nearest",
            )
        else:
            high = top if shared_scale else float(panel.grid.max())
            low = 0.0 if shared_scale else float(panel.grid.min())  # alone, a panel spans its own range
            shown = ax.imshow(
                panel.grid,
                cmap="inferno",
                vmin=low,
                vmax=high,
                alpha=0.6,
                extent=(0, size, size, 0),
                interpolation="bilinear" if panel.smooth else "nearest",
            )
        panel_box = panel.box if panel.box is not None else box
        if panel_box is not None:
            x0, y0, x1, y1 = panel_box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
        ax.set_title(panel.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def head_grid(effect: np.ndarray, path: Path, title: str) -> Path:
    """A layers x heads heat map of an effect per head (0-based indices on the axes)."""
    layers, heads = effect.shape
    fig = Figure(figsize=(max(4.5, 1.2 + 0.45 * heads), 1.2 + 0.4 * layers))
    ax = fig.subplots()
    shown = ax.imshow(effect, cmap="viridis", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(heads))
    ax.set_yticks(range(layers))
    ax.set_title("\n".join(textwrap.wrap(title, 48)), fontsize=9)
    fig.colorbar(shown, ax=ax)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    """Lay the figure out and write it as a PNG (its folder made as needed); returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
