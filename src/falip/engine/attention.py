"""How much of the [CLS] token's attention falls on a region: one helper for every place that reports it
(`falip demo`, the web page, `falip explain`, point clouds, the toy model's evaluation)."""

from __future__ import annotations

import numpy as np
import torch


def attention_share(
    attention: np.ndarray | torch.Tensor, inside: np.ndarray | torch.Tensor, map_dims: int = 1
) -> np.ndarray | float:
    """The share of attention mass on a region's tokens.

    Args:
        attention: non-negative weights over the patch tokens, (..., N) with `map_dims` 1 or
            (..., grid, grid) with `map_dims` 2 (e.g. the [CLS] row's softmax without its own entry,
            averaged over heads).
        inside: bool, the region's tokens, shaped like `attention` (or broadcastable to it).
        map_dims: how many trailing dimensions make one map.
    Returns:
        The share in [0, 1] per leading index (a float for a single map); NaN where a map's total is 0.
        Sums run in float64 on the CPU; tensors are detached and copied there first.
    Raises:
        ValueError: `inside` does not broadcast to `attention`'s shape (from `np.broadcast_to`).
    """
    a = (
        attention.detach().float().cpu().numpy()
        if isinstance(attention, torch.Tensor)
        else np.asarray(attention)
    )
    m = inside.detach().cpu().numpy() if isinstance(inside, torch.Tensor) else np.asarray(inside)
    m = np.broadcast_to(m, a.shape)
    axes = tuple(range(a.ndim - map_dims, a.ndim))
    total = a.sum(axis=axes, dtype=np.float64)
    part = np.where(m, a, 0).sum(axis=axes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, part / np.where(total > 0, total, 1), np.nan)
    return float(share) if share.ndim == 0 else share
