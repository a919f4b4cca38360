"""PASTA (Zhang et al. 2023, "Tell your model where to attend: post-hoc attention steering"), the
baseline of the paper's Table 1, moved from a language model's prompt spans to an image region.

PASTA steers chosen attention heads by scaling the attention that every query pays to the tokens
*outside* the emphasised span by a coefficient (0.01 in its paper and code) and renormalising,
i.e. adding `log(scale)` to those logits. Here the emphasised span is the region's tokens (the
tokens FALIP's bias covers); the [CLS] key counts as outside. Every query row is steered.

The FALIP paper gives neither PASTA's heads nor its scale. Our defaults: scale 0.01 (PASTA's) and
every head of the masked layers (FALIP's layers: the last third); `heads` picks (layer, head)
pairs instead, as PASTA's head configuration does.
"""

from __future__ import annotations

import math

import torch

from ..backbones.clip import VisionTransformer

PASTA_SCALE = 0.01


@torch.no_grad()
def pasta_features(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    inside: torch.Tensor,
    heads: dict[int, list[int]],
    scale: float = PASTA_SCALE,
    chunk_size: int = 32,
) -> torch.Tensor:
    """Features (R, output_dim) of one preprocessed image (1, 3, S, S) with each region's tokens
    `inside` (R, T) bool emphasised in the steered `heads` ({0-based layer: [head, ...]}).

    In the steered heads, every query's logits on the keys outside the region get `log(scale)` added
    (PASTA's steering, Zhang et al. 2023); `chunk_size` regions run at once. Raises ValueError when
    `scale` is not a positive finite number."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"the PASTA scale must be a positive number, got {scale}")
    device, dtype = visual.conv1.weight.device, visual.conv1.weight.dtype
    blocks = visual.blocks
    first = min(heads)
    x = visual.embed(pixels.to(device, dtype))
    for block in blocks[:first]:
        x = block(x)
    inside = inside.to(device)
    feats = []
    for start in range(0, len(inside), chunk_size):
        part = inside[start : start + chunk_size]
        outside = torch.where(part, 0.0, math.log(scale)).to(dtype)  # (n, T)
        h = x.expand(len(part), -1, -1)
        for index in range(first, len(blocks)):
            bias = None
            if index in heads:
                chosen = torch.zeros(visual.cfg.heads, dtype=dtype, device=device)
                chosen[heads[index]] = 1.0
                bias = chosen[None, :, None, None] * outside[:, None, None, :]  # (n, heads, 1, T): every row
            h = blocks[index](h, bias)
        feats.append(visual.head(h[:, 0]))
    return torch.cat(feats)
