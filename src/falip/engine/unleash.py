"""Unleashing visual prompts (the paper's Sec. 4.4, Eq. 6, Table 4): edit the attention heads that a
pixel prompt moves.

With G'_{l,h} the prompted image's head terms and G_{l,h} the original image's (`falip.engine.decompose`),
the attention term of the [CLS] in each edited layer becomes `sum_h [G'_h + (G'_h - G_h)]`.
Substituted in Eq. 5, the new [CLS] residual is the prompted image's residual plus the sum over the
edited layers and heads of `G'_{l,h} - G_{l,h}`; the MLP and every other term stay the prompted
run's (the paper substitutes, it does not recompute the later layers), then `ln_post` and the
projection. Edited layers by default: the last 4 of 12 (the paper's `l in [L-3, L]`), the last
third of other depths; a subset of heads can be chosen (e.g. the top of `falip heads rank`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backbones.clip import VisionTransformer
from ..inputs.masks import select_heads
from .decompose import decompose


def head_selection(
    layers: Sequence[int], heads: Sequence[tuple[int, int]] | None, depth: int, num_heads: int
) -> torch.Tensor:
    """(depth, num_heads) 0/1 float weights: every head of `layers` (0-based), or the given (layer, head)
    pairs. Raises ValueError for a pair that does not exist (`masks.select_heads`)."""
    chosen = torch.zeros(depth, num_heads)
    for layer, picked in select_heads(layers, heads, depth, num_heads).items():
        chosen[layer, picked] = 1.0
    return chosen


@torch.no_grad()
def head_deltas(
    visual: VisionTransformer, original: torch.Tensor, prompted: torch.Tensor, chunk_size: int = 32
):
    """(R, L, H, D) `G' - G` of R prompted copies (R, 3, S, S) of one image (1, 3, S, S), and the
    prompted runs' final [CLS] states (R, D); D is the tower's width (before `ln_post`), G the per-head
    terms of Eq. 5 (`decompose`). `chunk_size` prompted copies are decomposed at once."""
    base = decompose(visual, original).heads  # (1, L, H, D), once per image
    deltas, finals = [], []
    for start in range(0, len(prompted), chunk_size):
        run = decompose(visual, prompted[start : start + chunk_size])
        deltas.append(run.heads - base)
        finals.append(run.final)
    return torch.cat(deltas), torch.cat(finals)


@torch.no_grad()
def unleash_features(
    visual: VisionTransformer,
    original: torch.Tensor,
    prompted: torch.Tensor,
    layers: Sequence[int],
    heads: Sequence[tuple[int, int]] | None = None,
    chunk_size: int = 32,
) -> torch.Tensor:
    """Unleashed features (R, output_dim) of R prompted copies (R, 3, S, S) of one image (1, 3, S, S).

    Eq. 6 substituted in Eq. 5: each prompted run's final [CLS] state plus `G' - G` of the chosen
    heads (`heads` (layer, head) pairs, else every head of `layers`, both 0-based), then `ln_post` and
    the projection. Raises ValueError for a head that does not exist."""
    weight = visual.conv1.weight
    deltas, finals = head_deltas(
        visual, original.to(weight.device, weight.dtype), prompted.to(weight.device, weight.dtype), chunk_size
    )
    chosen = head_selection(layers, heads, len(visual.blocks), visual.cfg.heads).to(deltas)
    return visual.head(finals + torch.einsum("rlhd,lh->rd", deltas, chosen))
