"""Single-stream attention operations on the [CLS] row, ablated against FALIP's additive bias.

FALIP adds the foveal Gaussian to the [CLS] row's attention logits. The operations below also touch
only the [CLS] query row of the masked layers, so that they differ from FALIP in the operation
alone; every other row and layer runs as in plain CLIP. A region's weight per token is its foveal
bias divided by the bias peak: 1 at the centre, falling off inside the region's token rectangle,
0 outside ([CLS] itself counts 1).

- "feature-mask" (the paper's Fig. 7a, Table 5: "*" is element-wise multiplication): the [CLS]
  query reads keys and values made from the tokens' features times their weight (the region's
  features, the rest zeroed) instead of biasing its logits. The paper draws it without a formula;
  this is our reading of the figure, kept to the [CLS] row like FALIP's form (a).

Two more are **ours, not the paper's** (the paper's "Replace v" and "Replace q,k" are the two-stream
variants of `falip.engine.two_stream`); their names say so:

- "ours-mean-q": the [CLS] query is replaced by the weighted mean query of the region's tokens;
- "ours-hard-kv": the [CLS] query sees only keys and values inside the region (a hard mask: FALIP
  with an infinitely strong binary bias).

They run one plain forward per region from the first masked layer on (slow path; the fast engine
serves FALIP itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..backbones.clip import Block, VisionTransformer

OPERATIONS = ("feature-mask", "ours-mean-q", "ours-hard-kv")


def region_weights(rows: torch.Tensor) -> torch.Tensor:
    """(R, T) foveal bias rows -> per-token weights in [0, 1]: bias / the row's peak, [CLS] = 1.

    Raises ValueError when a row has no positive bias (alpha <= 0), which leaves nothing to weight."""
    peak = rows[:, 1:].amax(dim=1, keepdim=True)
    if bool((peak <= 0).any()):
        raise ValueError("the attention ablations need a region with positive bias: use alpha > 0")
    weights = (rows / peak).clamp(0.0, 1.0)
    weights[:, 0] = 1.0
    return weights


def _cls_context(
    block: Block, y: torch.Tensor, q, k, v, weights: torch.Tensor, operation: str
) -> torch.Tensor:
    """The [CLS] row's attention context (R, H, 1, dh) under an ablated operation."""
    if operation == "feature-mask":
        _, k, v = block.attn.qkv(y * weights[..., None].to(y.dtype))
        return F.scaled_dot_product_attention(q[:, :, :1], k, v)
    if operation == "ours-mean-q":
        w = weights[:, None, 1:, None].to(q.dtype)
        mean_q = (w * q[:, :, 1:]).sum(dim=2, keepdim=True) / w.sum(dim=2, keepdim=True)
        return F.scaled_dot_product_attention(mean_q, k, v)
    if operation == "ours-hard-kv":
        hard = torch.zeros_like(weights, dtype=q.dtype).masked_fill(weights <= 0, float("-inf"))
        return F.scaled_dot_product_attention(q[:, :, :1], k, v, attn_mask=hard[:, None, None, :])
    raise ValueError(f"unknown attention operation {operation!r}; choose one of {', '.join(OPERATIONS)}")


def _ablated_block(block: Block, x: torch.Tensor, weights: torch.Tensor, operation: str) -> torch.Tensor:
    attn = block.attn
    y = block.ln_1(x)
    q, k, v = attn.qkv(y)  # (R, H, T, dh)
    patch_ctx = F.scaled_dot_product_attention(q[:, :, 1:], k, v)  # patch rows: as in plain CLIP
    ctx = torch.cat([_cls_context(block, y, q, k, v, weights, operation), patch_ctx], dim=2)
    return block.finish(x, attn.out_proj(ctx.transpose(1, 2).flatten(2)))


@torch.no_grad()
def ablated_features(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    rows: torch.Tensor,
    layers: Sequence[int],
    operation: str,
    chunk_size: int = 32,
) -> torch.Tensor:
    """Features (R, output_dim) of the regions of one preprocessed image (1, 3, S, S) under an ablated
    [CLS]-row `operation` (one of `OPERATIONS`) in `layers` (0-based).

    `rows` (R, T) are the regions' foveal bias rows, turned into weights by `region_weights`;
    `chunk_size` regions run at once. Raises ValueError for an unknown operation or a row without
    positive bias. Source: the paper's Fig. 7a / Table 5 for "feature-mask"; the "ours-" ones are ours."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown attention operation {operation!r}; choose one of {', '.join(OPERATIONS)}")
    layers = sorted({int(layer) % len(visual.blocks) for layer in layers})
    weights = region_weights(rows.float()).to(visual.conv1.weight.device)
    x = visual.embed(pixels.to(visual.conv1.weight.device))
    for block in visual.blocks[: layers[0]]:
        x = block(x)
    feats = []
    for start in range(0, len(weights), chunk_size):
        part = weights[start : start + chunk_size]
        h = x.expand(len(part), *x.shape[1:])
        for index in range(layers[0], len(visual.blocks)):
            block = visual.blocks[index]
            h = _ablated_block(block, h, part, operation) if index in layers else block(h)
        feats.append(visual.head(h[:, 0]))
    return torch.cat(feats)
