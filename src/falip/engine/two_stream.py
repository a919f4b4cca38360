"""Table 5's two-stream ablations (the paper's Fig. 7b and 7c): attention that mixes the q, k and v
of the original image with those of its RedCircle image.

Both streams go through the same ViT. Outside the masked layers each runs as plain CLIP.

- "replace-v" (Fig. 7b, "q, k from the RedCircle image, v from the original image"): in each masked
  layer the *original* stream attends with the RedCircle stream's attention pattern,
  `softmax(q_p k_p^T / sqrt(d))` over every query row, applied to its own values (from its own
  `ln_1` output); the RedCircle stream runs plain throughout. The feature is the original
  stream's [CLS].
- "replace-qk" (Fig. 7c, "q, k from the original image and v from the RedCircle image, with the
  foveal attention mask"): in each masked layer the *RedCircle* stream attends with the original
  stream's pattern plus the region's foveal bias on the [CLS] row (form a),
  `softmax(q_o k_o^T / sqrt(d) + M)`, applied to its own values; the original stream runs plain.
  The feature is the RedCircle stream's [CLS].

The paper draws these variants but gives no formula; where it is silent we chose: every query row
takes the other stream's pattern (its figure shows whole attention maps, not one row), the values
come from each stream's own `ln_1` output, and the unmodified stream stays plain CLIP. With a
prompted image identical to the original, "replace-v" is plain CLIP and "replace-qk" is FALIP
when one layer is masked (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backbones.clip import VisionTransformer
from ..inputs.masks import attention_bias

TWO_STREAM_MODES = ("replace-v", "replace-qk")


@torch.no_grad()
def two_stream_features(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    prompted: torch.Tensor,
    layers: Sequence[int],
    mode: str,
    rows: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> torch.Tensor:
    """Features (R, output_dim) for one preprocessed image (1, 3, S, S) and its R prompted copies
    (R, 3, S, S), one per region, with the two streams mixed in `layers` (0-based) as `mode` says.

    `rows` (R, T) are the regions' foveal bias rows, needed by "replace-qk" only; `chunk_size` regions
    run at once. Raises ValueError for an unknown `mode`, or "replace-qk" without one row per prompted
    image. Source: the paper's Fig. 7b / 7c, with the choices listed in the module docstring."""
    if mode not in TWO_STREAM_MODES:
        raise ValueError(f"unknown two-stream mode {mode!r}; choose one of {', '.join(TWO_STREAM_MODES)}")
    if mode == "replace-qk" and (rows is None or len(rows) != len(prompted)):
        raise ValueError("replace-qk needs one foveal bias row per prompted image")
    device, dtype = visual.conv1.weight.device, visual.conv1.weight.dtype
    blocks = visual.blocks
    layers = sorted({int(layer) % len(blocks) for layer in layers})
    first = layers[0]

    original = visual.embed(pixels.to(device, dtype))
    for block in blocks[:first]:
        original = block(original)
    # The original stream of replace-qk is plain CLIP: the q and k it lends are the same for every region.
    lent = _plain_qk(visual, original, first, layers) if mode == "replace-qk" else None

    feats = []
    for start in range(0, len(prompted), chunk_size):
        part = slice(start, start + chunk_size)
        p = visual.embed(prompted[part].to(device, dtype))
        for block in blocks[:first]:
            p = block(p)
        if mode == "replace-v":
            o = original.expand(len(p), -1, -1)
            for index in range(first, len(blocks)):
                block = blocks[index]
                if index not in layers:
                    o, p = block(o), block(p)
                    continue
                q_p, k_p, v_p = block.attn.qkv(block.ln_1(p))
                _, _, v_o = block.attn.qkv(block.ln_1(o))
                o = block.finish(o, block.attn.attend(q_p, k_p, v_o))
                p = block.finish(p, block.attn.attend(q_p, k_p, v_p))
            feats.append(visual.head(o[:, 0]))
        else:
            bias = attention_bias(rows[part].to(device, torch.float32), "cls")
            for index in range(first, len(blocks)):
                block = blocks[index]
                if index not in layers:
                    p = block(p)
                    continue
                q_o, k_o = lent[index]
                _, _, v_p = block.attn.qkv(block.ln_1(p))
                p = block.finish(p, block.attn.attend(q_o.expand_as(v_p), k_o.expand_as(v_p), v_p, bias))
            feats.append(visual.head(p[:, 0]))
    return torch.cat(feats)


def _plain_qk(visual: VisionTransformer, x: torch.Tensor, first: int, layers: Sequence[int]) -> dict:
    """The plain stream's queries and keys (1, heads, T, head_dim) in each masked layer."""
    out = {}
    for index in range(first, layers[-1] + 1):
        block = visual.blocks[index]
        if index in layers:
            q, k, _ = block.attn.qkv(block.ln_1(x))
            out[index] = (q, k)
        x = block(x)
    return out
