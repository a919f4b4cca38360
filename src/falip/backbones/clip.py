"""The one internal form of a CLIP: explicit ViT and text towers in OpenAI's parameter layout.

Every loader converts its checkpoint into `ClipBackbone`; the foveal encoder reads these weights.
The plain forward here also takes an additive attention bias, which makes it the straightforward
(slow) masked forward that the fast engine is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("quick_gelu", "gelu")
QUICK_GELU = 1.702


@dataclass
class VisionConfig:
    """The image tower's shape. Defaults: OpenAI's ViT-B/16.

    `width` channels, `layers` blocks of `heads` heads, square patches of `patch_size` pixels on a
    square input of `image_size` pixels, MLP hidden size `mlp_dim`, projected feature size
    `output_dim`, activation `act` (one of `ACTIVATIONS`) and the LayerNorm epsilon `ln_eps`."""

    width: int = 768
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    image_size: int = 224
    mlp_dim: int = 3072
    output_dim: int = 512
    act: str = "quick_gelu"
    ln_eps: float = 1e-5

    @property
    def grid(self) -> int:
        """Patches per side of the token grid: `image_size // patch_size`."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """T, the tokens of one image: `grid ** 2` patches plus [CLS] (index 0)."""
        return self.grid**2 + 1


@dataclass
class TextConfig:
    """The text tower's shape, in `VisionConfig`'s terms. Defaults: OpenAI's ViT-B/16 text tower.

    At most `context_length` tokens from a vocabulary of `vocab_size` ids; `eos_token_id` is the token
    whose final state is pooled (None: the highest id in the sequence, OpenAI's argmax rule)."""

    width: int = 512
    layers: int = 12
    heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    mlp_dim: int = 2048
    output_dim: int = 512
    act: str = "quick_gelu"
    ln_eps: float = 1e-5
    eos_token_id: int | None = None  # None: pool at the highest token id (OpenAI's argmax rule)


@dataclass
class ClipConfig:
    """Both towers' configurations."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def to_dict(self) -> dict:
        """A nested plain dict `{"vision": {...}, "text": {...}}` (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClipConfig:
        """The inverse of `to_dict`: a missing tower raises KeyError, an unknown field TypeError."""
        return cls(VisionConfig(**data["vision"]), TextConfig(**data["text"]))


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply the MLP activation `name` elementwise to `x` (any shape).

    "quick_gelu" is `x * sigmoid(1.702 x)` (OpenAI's CLIP), "gelu" the exact (erf) GELU (open_clip's
    models without QuickGELU). Raises ValueError for any other name."""
    if name == "quick_gelu":
        return x * torch.sigmoid(QUICK_GELU * x)
    if name == "gelu":
        return F.gelu(x)
    raise ValueError(f"unsupported activation {name!r}; supported: {', '.join(ACTIVATIONS)}")


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (nn.MultiheadAttention's layout)."""

    def __init__(self, width: int, heads: int):
        """`width` channels split into `heads` heads of `width // heads`; the weights are untrained (a loader
        fills them)."""
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, width) -> (..., heads, T, head_dim)."""
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries, keys and values (..., heads, T, head_dim) of normalised tokens `x`
        (..., T, width), from the fused in-projection (q, k, v stacked in that order, as in
        `nn.MultiheadAttention`)."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def out_proj_per_head(self) -> torch.Tensor:
        """The out-projection split by input head: (heads, head_dim, width)."""
        return self.out_proj.weight.t().unflatten(0, (self.heads, self.head_dim))

    def attend(self, q, k, v, bias: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Attention output (..., T, width) of per-head queries, keys and values (..., heads, T, head_dim),
        with an optional additive bias on the logits: lets two streams mix their q, k and v."""
        if bias is not None:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal and bias is None)
        return self.out_proj(out.transpose(-3, -2).flatten(-2))

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """Self-attention of normalised tokens `x` (..., T, width) -> (..., T, width).

        `bias`, broadcastable to (..., heads, T, T), is added to the logits (the paper's Eq. 4 with
        `M = bias`); `causal` applies the text tower's causal mask, and only when no `bias` is given."""
        return self.attend(*self.qkv(x), bias, causal)


class Mlp(nn.Module):
    """The block's MLP in OpenAI's names: `c_fc` (width -> hidden), activation, `c_proj` (hidden -> width)."""

    def __init__(self, width: int, hidden: int, act: str):
        """`width` channels, `hidden` units, `act` one of `ACTIVATIONS` (checked when the MLP first runs)."""
        super().__init__()
        self.act = act
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (..., width). QuickGELU runs as a SiLU with its 1.702 scalings folded into the two
        matmuls: the same values up to float rounding, one elementwise pass instead of three."""
        if self.act != "quick_gelu":
            return self.c_proj(activation(self.act, self.c_fc(x)))
        # x * sigmoid(1.702 x) == silu(1.702 x) / 1.702: both scalings ride inside the matmuls,
        # leaving one fused in-place elementwise pass over the wide hidden layer instead of three.
        flat = x.reshape(-1, x.shape[-1])
        hidden = torch.addmm(self.c_fc.bias, flat, self.c_fc.weight.t(), beta=QUICK_GELU, alpha=QUICK_GELU)
        hidden = F.silu(hidden, inplace=True)
        out = torch.addmm(self.c_proj.bias, hidden, self.c_proj.weight.t(), alpha=1.0 / QUICK_GELU)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class Block(nn.Module):
    """Pre-norm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`."""

    def __init__(self, width: int, heads: int, mlp_dim: int, act: str, ln_eps: float):
        """`width` channels, `heads` heads, MLP hidden size `mlp_dim`, activation `act`, LayerNorm epsilon
        `ln_eps`; untrained weights."""
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=ln_eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=ln_eps)
        self.mlp = Mlp(width, mlp_dim, act)

    def finish(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """The rest of the block once the attention output is known."""
        x = x + attn_out
        return x + self.mlp(self.ln_2(x))

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """One block on `x` (..., T, width) -> (..., T, width); `bias`, `causal` as in `Attention.forward`."""
        return self.finish(x, self.attn(self.ln_1(x), bias, causal))


class Transformer(nn.Module):
    """`layers` `Block`s held as `resblocks` (OpenAI's module path, so state-dict keys match)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_dim: int, act: str, ln_eps: float):
        """The blocks' arguments as `Block`'s, plus their number `layers`."""
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, heads, mlp_dim, act, ln_eps) for _ in range(layers))


class VisionTransformer(nn.Module):
    """The image tower in the layout of OpenAI's `VisionTransformer` (CLIP's `model.py`).

    Patch embedding `conv1` (no bias), [CLS] and position embeddings, `ln_pre`, the blocks, `ln_post`
    and the projection `proj` (width, output_dim). The engine drives it through `embed`, the blocks'
    `Attention.qkv` / `Block.finish` and `head`."""

    def __init__(self, cfg: VisionConfig):
        """Built from `cfg`, untrained: a checkpoint loader or `ClipBackbone.init_random` fills it."""
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.num_tokens, w))
        self.ln_pre = nn.LayerNorm(w, eps=cfg.ln_eps)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_dim, cfg.act, cfg.ln_eps)
        self.ln_post = nn.LayerNorm(w, eps=cfg.ln_eps)
        self.proj = nn.Parameter(torch.zeros(w, cfg.output_dim))

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks in order: 0-based layer `l` is `blocks[l]`."""
        return self.transformer.resblocks

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) pixels -> (B, T, width) tokens entering the first block."""
        x = self.conv1(pixels.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def head(self, cls_token: torch.Tensor) -> torch.Tensor:
        """[CLS] state after the last block -> projected, unnormalised image feature."""
        return self.ln_post(cls_token) @ self.proj

    def forward(
        self,
        pixels: torch.Tensor,
        bias: torch.Tensor | None = None,
        bias_layers: Sequence[int] = (),
    ) -> torch.Tensor:
        """Plain CLIP image features; `bias` (broadcastable to (B, heads, T, T)) is added to the
        attention logits in `bias_layers` only: the one-forward-per-mask reference path."""
        x = self.embed(pixels)
        for index, block in enumerate(self.blocks):
            x = block(x, bias if index in bias_layers else None)
        return self.head(x[:, 0])

    @torch.no_grad()
    def cls_attention(
        self,
        pixels: torch.Tensor,
        bias: torch.Tensor | None = None,
        bias_layers: Sequence[int] = (),
        layer: int = -1,
    ) -> torch.Tensor:
        """Attention probabilities (B, heads, T) of the [CLS] query in `layer` (0-based; negative ones count
        from the end), under the same optional bias as `forward`: what the demo's heat maps show."""
        layer = layer % len(self.blocks)
        x = self.embed(pixels)
        for index, block in enumerate(self.blocks):
            layer_bias = bias if index in bias_layers else None
            if index == layer:
                q, k, _ = block.attn.qkv(block.ln_1(x))
                logits = (q[:, :, :1] @ k.transpose(-1, -2)) * block.attn.head_dim**-0.5
                if layer_bias is not None:
                    logits = logits + layer_bias[:, :, :1].to(logits.dtype)
                return torch.softmax(logits, dim=-1)[:, :, 0]
            x = block(x, layer_bias)
        raise AssertionError("unreachable")


class TextTransformer(nn.Module):
    """The text tower in the layout of OpenAI's CLIP (`encode_text`).

    Token and position embeddings, causal blocks, `ln_final` and `text_projection` (width, output_dim);
    the pooled token is chosen by `pool_index`."""

    def __init__(self, cfg: TextConfig):
        """Built from `cfg`, untrained: a checkpoint loader or `ClipBackbone.init_random` fills it."""
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_dim, cfg.act, cfg.ln_eps)
        self.ln_final = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.text_projection = nn.Parameter(torch.zeros(cfg.width, cfg.output_dim))

    def pool_index(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Position of the end-of-text token in each sequence."""
        if self.cfg.eos_token_id is None:
            return token_ids.argmax(dim=-1)
        return (token_ids == self.cfg.eos_token_id).int().argmax(dim=-1)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features (B, output_dim) of token ids (B, n), n <= `context_length`.

        The state at `pool_index` after `ln_final`, projected, as OpenAI's `encode_text`. A longer sequence
        fails at the position embedding (RuntimeError): the tokenizer truncates before this."""
        n = token_ids.shape[-1]
        x = self.token_embedding(token_ids) + self.positional_embedding[:n]
        for block in self.transformer.resblocks:
            x = block(x, causal=True)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), self.pool_index(token_ids)]
        return pooled @ self.text_projection


class ClipBackbone(nn.Module):
    """A CLIP ViT in OpenAI's layout: `visual.*`, `text.*` and `logit_scale`."""

    def __init__(self, cfg: ClipConfig):
        """Both towers from `cfg`; `logit_scale` starts at ln 100 = 4.6052 (the value of OpenAI's trained
        models), untrained weights elsewhere until a loader or `init_random` fills them."""
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg.vision)
        self.text = TextTransformer(cfg.text)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def init_random(self, seed: int = 0, std: float = 0.02) -> ClipBackbone:
        """Small random weights (for benchmarks and tests); LayerNorms stay identity."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if ".ln_" in name or name.startswith("visual.ln_") or name == "logit_scale":
                    continue
                if name.endswith("bias"):
                    param.normal_(0.0, std, generator=gen)
                else:
                    param.normal_(0.0, std if param.dim() > 1 else 1.0, generator=gen)
        return self


@torch.no_grad()
def resize_positions(visual: VisionTransformer, image_size: int) -> None:
    """Run the tower at another input size, in place: the patch position embeddings are interpolated
    bicubically from the trained grid to the new one ([CLS]'s stays), as the FALIP authors' code does
    for its `expand_position_embedding` option; `visual.cfg.image_size` follows.

    `image_size` is in pixels and must be a multiple of the patch size (ValueError otherwise); the
    trained size is a no-op."""
    cfg = visual.cfg
    if image_size == cfg.image_size:
        return
    if image_size % cfg.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {cfg.patch_size}")
    old, new = cfg.grid, image_size // cfg.patch_size
    table = visual.positional_embedding
    grid = table[1:].t().reshape(1, cfg.width, old, old).float()
    resized = (
        F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
        .reshape(cfg.width, new * new)
        .t()
    )
    visual.positional_embedding = nn.Parameter(torch.cat([table[:1], resized.to(table.dtype)]))
    cfg.image_size = image_size
