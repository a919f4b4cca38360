"""Foveal attention masks (FALIP, Eq. 1-3) as pure functions on the ViT's token grid.

A region becomes one *bias row*: a vector over the T = grid**2 + 1 keys (index 0 is [CLS], always 0)
that is added to the attention logits. Where it is added is the mask *form*:

- ``"cls"`` (form a, the paper's and the default): only the [CLS] query row, ``M[0, :] = b``;
- ``"all"`` (form b): every query row, ``M[i, :] = b``;
- ``"diag"`` (form c): the diagonal, ``M[j, j] = b[j]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

MASK_FORMS = ("cls", "all", "diag")
BOX_RULES = ("authors", "overlap")
GAUSSIAN_NUMERICS = ("authors", "exact")


@dataclass(frozen=True)
class TokenRect:
    """An inclusive rectangle of token rows and columns on the patch grid."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def height(self) -> int:
        """Token rows covered (bounds inclusive)."""
        return self.row1 - self.row0 + 1

    @property
    def width(self) -> int:
        """Token columns covered (bounds inclusive)."""
        return self.col1 - self.col0 + 1


def _edge_span(lo: float, hi: float, size: int, patch: int, rule: str) -> tuple[int, int]:
    grid = size // patch
    if rule == "authors":
        # The authors' `transform_box2token_base`: clamp above at the input size, ceil, minus one.
        # An edge exactly on a token boundary pulls in the previous token; kept for fidelity.
        lo, hi = min(lo, size), min(hi, size)
        first = max(math.ceil(lo / patch) - 1, 0)
        last = math.ceil(hi / patch) - 1
    elif rule == "overlap":
        # Every token the box overlaps with positive area.
        lo, hi = max(lo, 0.0), min(hi, float(size))
        first = int(math.floor(lo / patch))
        last = math.ceil(hi / patch) - 1
    else:
        raise ValueError(f"unknown box rule {rule!r}; choose one of {', '.join(BOX_RULES)}")
    return max(first, 0), min(last, grid - 1)


def box_to_token_rect(
    box_xyxy: tuple[float, float, float, float], size: int, patch: int, rule: str = "authors"
) -> TokenRect:
    """Token rectangle of a box given in *input* pixels (`x0, y0, x1, y1` after preprocessing).

    Raises ValueError for a box of zero or negative width or height, and for a box that lies wholly
    outside the `size` x `size` input: such a box has no tokens, and no mask is right for it.
    A box partly outside is clipped to the input.
    """
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box has a non-finite coordinate: {box_xyxy}")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box has zero or negative width or height: {box_xyxy}")
    if x1 <= 0 or y1 <= 0 or x0 >= size or y0 >= size:
        raise ValueError(f"box lies wholly outside the model's {size}x{size} view: {box_xyxy}")
    col0, col1 = _edge_span(x0, x1, size, patch, rule)
    row0, row1 = _edge_span(y0, y1, size, patch, rule)
    return TokenRect(row0, row1, col0, col1)


def gaussian_patch(
    height: int, width: int, alpha: float, sigma: float, numerics: str = "authors"
) -> np.ndarray:
    """Eq. 1-2: `alpha * minmax(exp(-d^2 / 2 sigma^2))` over a `height` x `width` rectangle (tokens),
    as a float32 (height, width) array.

    d is the distance to the rectangle's centre `((h-1)/2, (w-1)/2)` in token units, with the
    authors' `1e-6` guard in the min-max. `numerics="authors"` computes in float32 in their order and
    reproduces their values, rounding included: at sigma = 100 the range is tiny, so the peak can
    land up to ~5% above `alpha` (a one-token region gets 1.049 alpha). `"exact"` computes the same
    formula in float64: the peak is `alpha`. Raises ValueError for `sigma <= 0` or unknown `numerics`."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if numerics not in GAUSSIAN_NUMERICS:
        raise ValueError(f"unknown numerics {numerics!r}; choose one of {', '.join(GAUSSIAN_NUMERICS)}")
    ft = np.float32 if numerics == "authors" else np.float64
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    d2 = ((rows - (height - 1) / 2.0) ** 2 + (cols - (width - 1) / 2.0) ** 2).astype(ft)
    r = np.exp(ft(-0.5) * d2 / ft(sigma) ** 2).astype(ft)
    lo, hi = r.min(), r.max()
    return (ft(alpha) * (r - lo + ft(1e-6)) / (hi + ft(1e-6) - lo)).astype(np.float32)


def rect_bias_grid(
    rect: TokenRect, grid: int, alpha: float, sigma: float, numerics: str = "authors"
) -> np.ndarray:
    """The (grid, grid) foveal bias of a token rectangle: the Gaussian inside, 0 outside."""
    out = np.zeros((grid, grid), np.float32)
    out[rect.row0 : rect.row1 + 1, rect.col0 : rect.col1 + 1] = gaussian_patch(
        rect.height, rect.width, alpha, sigma, numerics
    )
    return out


def coverage_bias_grid(
    coverage: np.ndarray, alpha: float, sigma: float, numerics: str = "authors"
) -> np.ndarray:
    """The (grid, grid) foveal bias of a free-form region given as per-token `coverage` (grid, grid) in
    [0, 1].

    The Gaussian (Eq. 1-2, `alpha`, `sigma` in token units, `numerics` as in `gaussian_patch`) is laid
    over the bounding rectangle of the covered tokens (as for a box), then weighted by each token's
    coverage, so tokens outside the shape get nothing and edge tokens less. Raises ValueError when no
    token is covered."""
    coverage = np.asarray(coverage, np.float32)
    rows, cols = np.nonzero(coverage > 0)
    if rows.size == 0:
        raise ValueError("the mask covers no pixel that the model sees")
    rect = TokenRect(int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))
    return rect_bias_grid(rect, coverage.shape[0], alpha, sigma, numerics) * np.clip(coverage, 0.0, 1.0)


def bias_row(grid_bias: np.ndarray) -> torch.Tensor:
    """Flatten a (grid, grid) bias to a row over all T keys, [CLS] (index 0) first with 0."""
    flat = torch.from_numpy(np.ascontiguousarray(grid_bias, dtype=np.float32)).reshape(-1)
    return torch.cat([flat.new_zeros(1), flat])


def attention_bias(rows: torch.Tensor, form: str = "cls") -> torch.Tensor:
    """Expand bias rows (R, T) into additive attention masks broadcastable to (R, heads, T, T), per mask
    `form` (Eq. 3 for "cls"): "cls" (R, 1, T, T), "all" (R, 1, 1, T), "diag" (R, 1, T, T).

    Raises ValueError for rows that are not 2-D or an unknown form."""
    if rows.dim() != 2:
        raise ValueError(f"bias rows must be (R, T), got shape {tuple(rows.shape)}")
    r, t = rows.shape
    if form == "cls":
        out = rows.new_zeros(r, 1, t, t)
        out[:, 0, 0, :] = rows
        return out
    if form == "all":
        return rows[:, None, None, :]
    if form == "diag":
        return torch.diag_embed(rows)[:, None]
    raise ValueError(f"unknown mask form {form!r}; choose one of {', '.join(MASK_FORMS)}")


def default_layers(depth: int) -> list[int]:
    """The masked layers by default: the last third (the last 4 of 12, as the authors), 0-based."""
    count = max(1, round(depth / 3))
    return list(range(depth - count, depth))


def resolve_layers(layers: list[int] | tuple[int, ...] | None, depth: int) -> list[int]:
    """Validate 0-based layer indices of a `depth`-block tower (negative ones count from the end) and
    return them sorted, unique and non-negative; None gives `default_layers`.

    Raises ValueError for a layer outside -depth .. depth - 1, or an empty list."""
    if layers is None:
        return default_layers(depth)
    out = set()
    for layer in layers:
        index = int(layer)
        if not -depth <= index < depth:
            raise ValueError(f"layer {layer} does not exist: the model has {depth} layers (0..{depth - 1})")
        out.add(index % depth)
    if not out:
        raise ValueError("no layer to mask: give at least one layer index")
    return sorted(out)


def parse_heads(text: str) -> list[tuple[int, int]]:
    """'9:5,10:0' -> [(9, 5), (10, 0)] (0-based layer:head pairs; a layer may be negative).

    Raises ValueError for an item that is not LAYER:HEAD in integers, or for no item at all."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        layer, sep, head = item.partition(":")
        if not sep or not layer.strip().lstrip("-").isdigit() or not head.strip().isdigit():
            raise ValueError(f"a head is LAYER:HEAD (0-based integers), got {item!r}")
        pairs.append((int(layer), int(head)))
    if not pairs:
        raise ValueError("no head given: use LAYER:HEAD,...")
    return pairs


def select_heads(
    layers: Sequence[int], heads: Sequence[tuple[int, int]] | None, depth: int, num_heads: int
) -> dict[int, list[int]]:
    """{layer: [heads]}: the given (layer, head) pairs, or every head of `layers` (PASTA's steered
    heads, unleash's edited heads); layers 0-based (negative from the end) in a tower of `depth`
    blocks of `num_heads` heads, keys normalised to 0 .. depth - 1, heads sorted and unique.

    Raises ValueError for a pair whose layer or head does not exist."""
    if heads is None:
        return {int(layer) % depth: list(range(num_heads)) for layer in layers}
    out: dict[int, list[int]] = {}
    for layer, head in heads:
        if not -depth <= layer < depth or not 0 <= head < num_heads:
            raise ValueError(
                f"head {layer}:{head} does not exist: the model has {depth} layers of {num_heads} heads"
            )
        out.setdefault(layer % depth, []).append(head)
    return {layer: sorted(set(h)) for layer, h in sorted(out.items())}
