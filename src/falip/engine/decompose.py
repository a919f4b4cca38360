"""The [CLS] output of a CLIP ViT as a sum of per-layer, per-head terms (the paper's Eq. 5, after
Gandelsman et al. 2023, "Interpreting CLIP's image representation via text-based decomposition").

The final [CLS] residual (before `ln_post`) is

    x_L[cls] = x_0[cls] + sum_l MSA_l[cls] + sum_l MLP_l[cls],

x_0[cls] the class embedding plus position 0 after `ln_pre`. Each layer's attention output of the
[CLS] row splits by head,

    MSA_l[cls] = sum_h G_{l,h} + b_O,    G_{l,h} = sum_i p^h_{0,i} (LN(x_i^{l-1}) W_V^h + b_V^h) W_O^h,

with the out-projection bias b_O a term of its own, and each head's term further by token i. Into
the joint space as Gandelsman does: `ln_post` is linearised with the full residual's standard
deviation (each part minus its own mean, times the LN weight over that std; the LN bias a term of
its own), then the projection, so the projected parts sum to `encode_image` and dot with text
embeddings. Any additive attention bias (FALIP's) can be applied in chosen layers, so the prompted
and the foveated image decompose alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..backbones.clip import VisionTransformer


@dataclass
class ClsDecomposition:
    """Terms of the [CLS] residual of B images: `residual()` sums them; `final` is the real one."""

    embedding: torch.Tensor  # (B, D)
    heads: torch.Tensor  # (B, L, H, D): G_{l,h}
    attn_bias: torch.Tensor  # (L, D): b_O of each layer
    mlp: torch.Tensor  # (B, L, D)
    final: torch.Tensor  # (B, D): the [CLS] state after the last block, computed as usual
    attention: torch.Tensor  # (B, L, H, T): the [CLS] row's attention probabilities
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, H, T, D), on request

    def residual(self) -> torch.Tensor:
        """The sum of all terms (B, D): the [CLS] residual before `ln_post`, equal to `final` up to float
        rounding."""
        return self.embedding + self.heads.sum(dim=(1, 2)) + self.attn_bias.sum(0) + self.mlp.sum(1)


@torch.no_grad()
def decompose(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    bias: torch.Tensor | None = None,
    bias_layers: Sequence[int] = (),
    token_layers: Sequence[int] = (),
) -> ClsDecomposition:
    """Decompose the [CLS] residual of preprocessed images (B, 3, S, S); `bias` (broadcastable to
    (B, heads, T, T)) is added to the attention logits in `bias_layers`, as in `visual.forward`;
    per-token terms are kept for `token_layers`."""
    depth = len(visual.blocks)
    bias_layers = {int(layer) % depth for layer in bias_layers}
    token_layers = {int(layer) % depth for layer in token_layers}
    weight = visual.conv1.weight
    x = visual.embed(pixels.to(weight.device, weight.dtype))
    embedding = x[:, 0]
    heads, mlps, probs_all, tokens = [], [], [], {}
    for index, block in enumerate(visual.blocks):
        attn = block.attn
        q, k, v = attn.qkv(block.ln_1(x))  # (B, H, T, dh)
        layer_bias = bias.to(q.dtype) if bias is not None and index in bias_layers else None
        logits = torch.einsum("bhd,bhtd->bht", q[:, :, 0], k) * attn.head_dim**-0.5
        if layer_bias is not None:
            logits = logits + layer_bias.expand(x.shape[0], attn.heads, -1, -1)[:, :, 0]
        probs = torch.softmax(logits, dim=-1)  # (B, H, T)
        w_o = attn.out_proj_per_head()  # (H, dh, D)
        heads.append(torch.einsum("bhd,hde->bhe", torch.einsum("bht,bhtd->bhd", probs, v), w_o))
        if index in token_layers:
            tokens[index] = torch.einsum("bht,bhtd,hde->bhte", probs, v, w_o)
        probs_all.append(probs)
        x = x + attn.attend(q, k, v, layer_bias)
        mlp = block.mlp(block.ln_2(x))
        mlps.append(mlp[:, 0])
        x = x + mlp
    attn_bias = torch.stack([block.attn.out_proj.bias for block in visual.blocks])
    return ClsDecomposition(
        embedding,
        torch.stack(heads, 1),
        attn_bias,
        torch.stack(mlps, 1),
        x[:, 0],
        torch.stack(probs_all, 1),
        tokens,
    )


def to_joint(visual: VisionTransformer, part: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """A part (B, ..., D) of residuals (B, D) into the joint space: minus its mean, times the LN weight
    over the residual's std, then the projection (the LN bias is `ln_bias_joint`'s term)."""
    ln = visual.ln_post
    std = (residual.var(dim=-1, unbiased=False) + ln.eps).sqrt()  # (B,)
    std = std.reshape(-1, *([1] * (part.dim() - 1)))
    centred = part - part.mean(dim=-1, keepdim=True)
    return (centred / std * ln.weight) @ visual.proj


def ln_bias_joint(visual: VisionTransformer) -> torch.Tensor:
    """The LN bias's term in the joint space (output_dim,)."""
    return visual.ln_post.bias @ visual.proj


@torch.no_grad()
def joint_parts(visual: VisionTransformer, decomposition: ClsDecomposition) -> dict[str, torch.Tensor]:
    """Every term in the joint space; they sum to the image feature (`encode_image`).
    Keys: embedding (B, E), heads (B, L, H, E), attn_bias (B, L, E), mlp (B, L, E), ln_bias (E,),
    and tokens_<layer> (B, H, T, E) for the layers decomposed by token."""
    r = decomposition.final
    batch = r.shape[0]
    parts = {
        "embedding": to_joint(visual, decomposition.embedding, r),
        "heads": to_joint(visual, decomposition.heads, r),
        "attn_bias": to_joint(visual, decomposition.attn_bias.expand(batch, -1, -1), r),
        "mlp": to_joint(visual, decomposition.mlp, r),
        "ln_bias": ln_bias_joint(visual),
    }
    for layer, terms in decomposition.tokens.items():
        parts[f"tokens_{layer}"] = to_joint(visual, terms, r)
    return parts


@torch.no_grad()
def attention_rollout(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    bias: torch.Tensor | None = None,
    bias_layers: Sequence[int] = (),
) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020) of the [CLS] token, (B, T): the product over layers
    of `(A_l + I) / 2` (A_l the head-averaged attention, with the bias in `bias_layers`), row 0. An
    explanation map that needs no gradient; the paper's Fig. 15 uses Chefer et al.'s gradient-weighted
    relevance instead."""
    depth = len(visual.blocks)
    bias_layers = {int(layer) % depth for layer in bias_layers}
    weight = visual.conv1.weight
    x = visual.embed(pixels.to(weight.device, weight.dtype))
    tokens = x.shape[1]
    rollout = torch.eye(tokens, dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
    for index, block in enumerate(visual.blocks):
        attn = block.attn
        q, k, v = attn.qkv(block.ln_1(x))
        layer_bias = bias.to(q.dtype) if bias is not None and index in bias_layers else None
        logits = q @ k.transpose(-1, -2) * attn.head_dim**-0.5
        if layer_bias is not None:
            logits = logits + layer_bias
        mixed = 0.5 * torch.softmax(logits, dim=-1).mean(1) + 0.5 * torch.eye(
            tokens, dtype=x.dtype, device=x.device
        )
        rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
        x = x + attn.attend(q, k, v, layer_bias)
        x = x + block.mlp(block.ln_2(x))
    return rollout[:, 0]


def gradient_relevance(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    bias_layers: Sequence[int] = (),
) -> torch.Tensor:
    """Chefer et al.'s relevance (2021, "Generic attention-model explainability") of the [CLS] token
    for the cosine of the image feature with `target` (E,), (B, T): starting from the identity, each
    layer adds `mean_h[(grad A * A)^+] @ R`, A its attention probabilities (with the bias in
    `bias_layers`), the gradient that of the cosine; row 0."""
    depth = len(visual.blocks)
    bias_layers = {int(layer) % depth for layer in bias_layers}
    weight = visual.conv1.weight
    with torch.enable_grad():
        x = visual.embed(pixels.to(weight.device, weight.dtype).detach())
        probs_all = []
        for index, block in enumerate(visual.blocks):
            attn = block.attn
            q, k, v = attn.qkv(block.ln_1(x))
            logits = q @ k.transpose(-1, -2) * attn.head_dim**-0.5
            if bias is not None and index in bias_layers:
                logits = logits + bias.to(q.dtype)
            probs = torch.softmax(logits, dim=-1)
            probs.retain_grad()
            probs_all.append(probs)
            x = x + attn.out_proj((probs @ v).transpose(-3, -2).flatten(-2))
            x = x + block.mlp(block.ln_2(x))
        feature = visual.head(x[:, 0])
        cosine = (
            torch.nn.functional.normalize(feature, dim=-1)
            * torch.nn.functional.normalize(target.to(feature), dim=-1)
        ).sum()
        cosine.backward()
    with torch.no_grad():
        tokens = x.shape[1]
        relevance = torch.eye(tokens, dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
        for probs in probs_all:
            cam = (probs.grad * probs).clamp(min=0).mean(1)
            relevance = relevance + cam @ relevance
    visual.zero_grad(set_to_none=True)
    return relevance[:, 0].detach()


@dataclass
class TextSpan:
    """Gandelsman et al.'s text-based decomposition of one image embedding, dotted with a text.

    `heads[b, l, h, i]`: the contribution of token i through head h of layer l to the cosine of the
    image embedding with the text; `residual[b, k]`: that of the k-th other term of the residual
    stream (k = 0 the embedding after `ln_pre`, k = l + 1 the MLP of layer l). Everything sums to the
    cosine (`total`)."""

    heads: torch.Tensor  # (B, L, H, T)
    residual: torch.Tensor  # (B, L + 1)
    cosine: torch.Tensor  # (B,): cos(encode_image, text), computed as usual

    def total(self) -> torch.Tensor:
        """(B,): the sum of every head's and residual term's contribution; equals `cosine` up to rounding."""
        return self.heads.sum(dim=(1, 2, 3)) + self.residual.sum(1)

    def head_map(self, layer: int, head: int) -> torch.Tensor:
        """(B, T): one head's per-token contributions (Fig. 6, left)."""
        return self.heads[:, layer, head]

    def token_map(self) -> torch.Tensor:
        """(B, T): every layer's and head's contributions summed per token (Fig. 15; Gandelsman's demo
        `attentions[0, :, 1:, :].sum(axis=(0, 2)) @ text`)."""
        return self.heads.sum(dim=(1, 2))


@torch.no_grad()
def text_span(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    text: torch.Tensor,
    bias: torch.Tensor | None = None,
    bias_layers: Sequence[int] = (),
) -> TextSpan:
    """Per layer, head and token contributions of preprocessed images (B, 3, S, S) to their embedding's
    cosine with `text` (E,), after Gandelsman, Efros and Steinhardt (ICLR 2024), the maps the FALIP
    paper's Figs. 6 and 15 draw ("generated by [13]"); `bias` as in `decompose` (FALIP's, in
    `bias_layers`).

    As their `prs_hook.py` does: the [CLS] row of each layer's attention output is split by token i
    and head h, `c = p^h_{0,i} v^h_i W_O^h`, the out-projection bias shared equally by the T x H terms;
    the residual's other terms are the embedding after `ln_pre` and each layer's MLP output. `ln_post`
    is spread over the K = 2L + 1 terms: each term minus 1/(K n) of the final residual's mean, times the
    LN weight over its std (sqrt(var + eps)), plus 1/(K n) of the LN bias (n = T H for a head-token
    term, 1 otherwise); then the projection, divided by the norm of the image embedding and dotted
    with the unit text. Returns a `TextSpan` (its terms sum to the cosine)."""
    depth = len(visual.blocks)
    bias_layers = {int(layer) % depth for layer in bias_layers}
    weight = visual.conv1.weight
    x = visual.embed(pixels.to(weight.device, weight.dtype))
    tokens = x.shape[1]
    raw_heads, raw_residual = [], [x[:, 0]]
    for index, block in enumerate(visual.blocks):
        attn = block.attn
        q, k, v = attn.qkv(block.ln_1(x))
        layer_bias = bias.to(q.dtype) if bias is not None and index in bias_layers else None
        logits = torch.einsum("bhd,bhtd->bht", q[:, :, 0], k) * attn.head_dim**-0.5
        if layer_bias is not None:
            logits = logits + layer_bias.expand(x.shape[0], attn.heads, -1, -1)[:, :, 0]
        probs = torch.softmax(logits, dim=-1)  # (B, H, T)
        terms = torch.einsum("bht,bhtd,hde->bhte", probs, v, attn.out_proj_per_head())
        raw_heads.append(terms + attn.out_proj.bias / (tokens * attn.heads))
        x = x + attn.attend(q, k, v, layer_bias)
        mlp = block.mlp(block.ln_2(x))
        raw_residual.append(mlp[:, 0])
        x = x + mlp
    final = x[:, 0].float()
    ln = visual.ln_post
    mean = final.mean(-1)  # (B,)
    std = (final.var(-1, unbiased=False) + ln.eps).sqrt()
    representation = visual.head(x[:, 0]).float()
    unit_text = torch.nn.functional.normalize(text.float().to(final.device), dim=-1)
    direction = visual.proj.float() @ unit_text  # (D,): the projection, then the text
    scale = representation.norm(dim=-1)  # (B,)
    intermediates = 2 * depth + 1
    weighted = ln.weight.float() * direction  # (D,)
    bias_dot = float(ln.bias.float() @ direction)

    def project(part: torch.Tensor, share: int) -> torch.Tensor:
        """`part` (B, ..., D) -> its contribution (B, ...) to the cosine."""
        view = (-1,) + (1,) * (part.dim() - 2)
        centred = part.float() @ weighted - (mean / (intermediates * share)).reshape(view) * weighted.sum()
        return (centred / std.reshape(view) + bias_dot / (intermediates * share)) / scale.reshape(view)

    heads = torch.stack([project(t, tokens * t.shape[1]) for t in raw_heads], 1)  # (B, L, H, T)
    residual = torch.stack([project(r, 1) for r in raw_residual], 1)  # (B, L + 1)
    cosine = torch.nn.functional.cosine_similarity(representation, unit_text[None], dim=-1)
    return TextSpan(heads, residual, cosine)
