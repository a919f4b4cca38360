"""The foveal encoder: region features of a CLIP ViT under FALIP's attention bias, computed fast.

A region's bias touches only the [CLS] query row (form a), so layer by layer:

- blocks before the first masked layer `f` do not depend on the region: run once per image;
- in layer `f` the patch rows are still shared; only the [CLS] row is computed per region;
- in layer `f + 1` each patch row attends to shared patch keys plus one per-region key (the
  region's [CLS] token). The shared part of that softmax is computed once; a region adds its one key
  by a log-sum-exp correction, and the out-projection is folded per head, so only the MLP of this
  layer runs per region on all tokens;
- later blocks run per region in full, except the last, where only the [CLS] output is needed and
  the key/value projections are folded into the [CLS] query and the attention weights.

Identical (image, bias) pairs are computed once. Forms b and c (bias on every row or the diagonal)
change the patch rows too and take the straightforward per-region path from layer `f` on.
Everything equals one plain masked forward per region (`VisionTransformer.forward`) up to float
rounding; the tests hold it to 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..backbones.clip import Block, VisionTransformer
from ..inputs.masks import MASK_FORMS, attention_bias

DEFAULT_CHUNK = 32


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., width) -> (..., heads, head_dim)."""
    return x.unflatten(-1, (heads, x.shape[-1] // heads))


class FovealEncoder:
    """Computes FALIP region features with a `VisionTransformer`'s weights (no copy is made)."""

    def __init__(self, visual: VisionTransformer, chunk_size: int = DEFAULT_CHUNK):
        """`visual`: the tower whose weights are used in place; `chunk_size`: how many regions the per-region
        layers run at once (memory against speed; a call's `chunk_size` overrides it)."""
        self.visual = visual
        self.chunk_size = chunk_size

    @property
    def blocks(self) -> Sequence[Block]:
        """The tower's blocks in order: 0-based layer `l` is `blocks[l]`."""
        return self.visual.blocks

    @torch.no_grad()
    def __call__(
        self,
        pixels: torch.Tensor,
        rows: torch.Tensor,
        image_index: torch.Tensor,
        layers: Sequence[int],
        form: str = "cls",
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Region features (R, output_dim), unnormalised: FALIP's foveated forward (Eq. 4) for every region.

        pixels: (B, 3, S, S) preprocessed images; rows: (R, T) bias rows (Eq. 1-3,
        `regions.region_bias_rows`); image_index: (R,) the image of each region; layers: 0-based masked
        layers (negative ones count from the end); form: "cls", "all" or "diag" (`masks.MASK_FORMS`);
        chunk_size: regions per batch (None: the encoder's). Raises ValueError for an unknown form or
        rows not shaped (R, T)."""
        layers = sorted({int(layer) % len(self.blocks) for layer in layers})
        if form not in MASK_FORMS:
            raise ValueError(f"unknown mask form {form!r}; choose one of {', '.join(MASK_FORMS)}")
        if rows.dim() != 2 or rows.shape[1] != self.visual.cfg.num_tokens:
            raise ValueError(f"bias rows must be (R, {self.visual.cfg.num_tokens}), got {tuple(rows.shape)}")
        chunk = chunk_size or self.chunk_size
        weight = self.visual.conv1.weight
        rows = rows.to(weight.device, torch.float32)
        image_index = image_index.to(weight.device)
        keys = torch.cat([image_index[:, None].to(rows.dtype), rows], dim=1)
        unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
        u_img, u_rows = unique[:, 0].long(), unique[:, 1:].to(weight.dtype)

        x = self.visual.embed(pixels.to(weight.device))
        for block in self.blocks[: layers[0]]:
            x = block(x)

        out = torch.empty(len(unique), self.visual.cfg.output_dim, dtype=weight.dtype, device=weight.device)
        for b in torch.unique(u_img).tolist():
            sel = (u_img == b).nonzero().squeeze(1)
            if form == "cls":
                out[sel] = self._cls_form(x[b], u_rows[sel], layers, chunk)
            else:
                out[sel] = self._any_form(x[b], u_rows[sel], layers, form, chunk)
        return out[inverse]

    def _any_form(
        self, x: torch.Tensor, rows: torch.Tensor, layers: list[int], form: str, chunk: int
    ) -> torch.Tensor:
        """Plain per-region forward from the first masked layer on (forms b and c)."""
        feats = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            bias = attention_bias(part, form)
            h = x.expand(len(part), *x.shape)
            for index in range(layers[0], len(self.blocks)):
                h = self.blocks[index](h, bias if index in layers else None)
            feats.append(self.visual.head(h[:, 0]))
        return torch.cat(feats)

    def _cls_form(self, x: torch.Tensor, rows: torch.Tensor, layers: list[int], chunk: int) -> torch.Tensor:
        last = len(self.blocks) - 1
        first = layers[0]
        cls, patches = self._first_masked_layer(self.blocks[first], x, rows)
        if first == last:
            return self.visual.head(cls)
        nxt = first + 1
        nxt_masked = nxt in layers
        if nxt == last:
            bias = rows if nxt_masked else None
            return self.visual.head(self._last_layer_shared_patches(self.blocks[nxt], cls, patches, bias))
        shared = self._second_layer_shared(self.blocks[nxt], patches)
        feats = []
        for start in range(0, len(rows), chunk):
            part = slice(start, start + chunk)
            bias = rows[part] if nxt_masked else None
            h = self._second_layer_regions(self.blocks[nxt], shared, cls[part], patches, bias)
            cls_bias = attention_bias(rows[part], "cls")
            for index in range(nxt + 1, last):
                h = self.blocks[index](h, cls_bias if index in layers else None)
            c = self._last_layer(self.blocks[last], h, rows[part] if last in layers else None)
            feats.append(self.visual.head(c))
        return torch.cat(feats)

    @staticmethod
    def _first_masked_layer(
        block: Block, x: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer f: shared patch rows (N, D); per-region [CLS] rows (R, D)."""
        attn = block.attn
        q, k, v = attn.qkv(block.ln_1(x))  # (H, T, dh)
        patch_ctx = F.scaled_dot_product_attention(q[:, 1:], k, v)  # (H, N, dh)
        patches = block.finish(x[1:], attn.out_proj(patch_ctx.transpose(0, 1).flatten(1)))
        logits = torch.einsum("hd,htd->ht", q[:, 0], k) * attn.head_dim**-0.5
        probs = torch.softmax(logits[None] + rows[:, None, :], dim=-1)  # (R, H, T)
        ctx = torch.einsum("rht,htd->rhd", probs, v).flatten(1)
        cls = block.finish(x[0].expand(len(rows), -1), attn.out_proj(ctx))
        return cls, patches

    @staticmethod
    def _cls_attention_over(block: Block, cls: torch.Tensor, k_p: torch.Tensor, v_p: torch.Tensor, bias):
        """[CLS] attention output (R, D) when the keys are the region's own [CLS] plus shared patches."""
        attn = block.attn
        q_c, k_c, v_c = (
            _heads(t, attn.heads)
            for t in F.linear(block.ln_1(cls), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
        )
        scale = attn.head_dim**-0.5
        logits = (
            torch.cat([(q_c * k_c).sum(-1, keepdim=True), torch.einsum("rhd,hnd->rhn", q_c, k_p)], dim=-1)
            * scale
        )
        if bias is not None:
            logits = logits + bias[:, None, :]
        probs = torch.softmax(logits, dim=-1)
        ctx = probs[..., :1] * v_c + torch.einsum("rhn,hnd->rhd", probs[..., 1:], v_p)
        return attn.out_proj(ctx.flatten(1)), k_c, v_c

    def _last_layer_shared_patches(self, block: Block, cls, patches, bias) -> torch.Tensor:
        """Layer f+1 when it is the last: only [CLS] out, patch keys/values shared."""
        _, k_p, v_p = block.attn.qkv(block.ln_1(patches))
        out, _, _ = self._cls_attention_over(block, cls, k_p, v_p, bias)
        return block.finish(cls, out)

    @staticmethod
    def _second_layer_shared(block: Block, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """The region-independent part of the patch rows' attention in layer f+1."""
        attn = block.attn
        q, k, v = attn.qkv(block.ln_1(patches))  # (H, N, dh)
        scores = (q.float() @ k.float().transpose(-1, -2)) * attn.head_dim**-0.5  # (H, N, N)
        peak = scores.amax(dim=-1)
        weights = torch.exp(scores - peak[..., None])
        total = weights.sum(dim=-1)
        mean_v = (weights @ v.float()) / total[..., None]  # (H, N, dh)
        w_o = block.attn.out_proj_per_head()
        contrib = torch.einsum("hnd,hde->hne", mean_v.to(w_o.dtype), w_o)  # (H, N, D)
        return {"q": q, "k": k, "v": v, "peak": peak, "total": total, "contrib": contrib, "w_o": w_o}

    def _second_layer_regions(self, block: Block, shared: dict, cls, patches, bias) -> torch.Tensor:
        """Layer f+1 for a chunk of regions: (R, T, D) states after the block."""
        attn = block.attn
        cls_out, k_c, v_c = self._cls_attention_over(block, cls, shared["k"], shared["v"], bias)
        extra = torch.einsum("hnd,rhd->rhn", shared["q"], k_c).float() * attn.head_dim**-0.5
        top = torch.maximum(shared["peak"], extra)
        keep = torch.exp(shared["peak"] - top) * shared["total"]
        new = torch.exp(extra - top)
        share = (keep / (keep + new)).to(cls.dtype)  # weight of the shared keys, per (region, head, row)
        own = torch.einsum("rhd,hde->rhe", v_c, shared["w_o"])  # (R, H, D)
        patch_out = (
            torch.einsum("rhn,hne->rne", share, shared["contrib"])
            + torch.einsum("rhn,rhe->rne", 1 - share, own)
            + attn.out_proj.bias
        )
        h = torch.cat([cls[:, None], patches.expand(len(cls), -1, -1)], dim=1)
        return block.finish(h, torch.cat([cls_out[:, None], patch_out], dim=1))

    @staticmethod
    def _last_layer(block: Block, h: torch.Tensor, bias) -> torch.Tensor:
        """The last block's [CLS] output (R, D), with q/k/v folded: no per-token key or value."""
        attn = block.attn
        heads, dh = attn.heads, attn.head_dim
        y = block.ln_1(h)  # (R, T, D)
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        q = _heads(F.linear(y[:, 0], w_q, b_q), heads)  # (R, H, dh)
        q_k = torch.einsum("rhd,hde->rhe", q, w_k.unflatten(0, (heads, dh)))  # (R, H, D)
        logits = torch.einsum("rhe,rte->rht", q_k, y) + (q * b_k.unflatten(0, (heads, dh))).sum(
            -1, keepdim=True
        )
        logits = logits * dh**-0.5
        if bias is not None:
            logits = logits + bias[:, None, :]
        probs = torch.softmax(logits, dim=-1)
        mixed = torch.einsum("rht,rte->rhe", probs, y)  # (R, H, D)
        ctx = torch.einsum("rhe,hde->rhd", mixed, w_v.unflatten(0, (heads, dh))) + b_v.unflatten(
            0, (heads, dh)
        )
        return block.finish(h[:, 0], attn.out_proj(ctx.flatten(1)))
