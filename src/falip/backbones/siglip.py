"""SigLIP (`SiglipModel` in transformers, and SigLIP 2's fixed-resolution checkpoints, which load as
`SiglipModel`), written out explicitly with the parameter names transformers saves, plus FALIP.

SigLIP has no [CLS] token: its image feature is an attention-pooling head whose one learned query
(the "probe") attends over the patch tokens after the last layer. That query row is where FALIP's
bias goes (the analogue of the paper's [CLS] row, form a); every encoder layer is then shared by
the regions of an image, so only the head runs per region. Asked for form b (`form="all"`), the
masked encoder layers also take the bias on every query row, since no [CLS] row exists there.
This is our extension of the paper, which studies CLIP only. The text tower attends without a
causal mask and pools the last position (the tokenizer pads to the full length, as SigLIP was
trained); `score` adds SigLIP's logit bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FalipError
from ..inputs.masks import attention_bias
from .clip import ClipConfig, TextConfig, VisionConfig


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (transformers' `SiglipAttention`).

    Softmax scale 1/sqrt(head_dim), no dropout (inference only); the projections carry biases, as
    transformers saves them (`q_proj`, `k_proj`, `v_proj`, `out_proj`).
    """

    def __init__(self, width: int, heads: int):
        """`width`: the token width D; `heads`: the number of heads (head_dim = D // heads, which must
        divide D exactly for the checkpoint's weights to load)."""
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) tokens -> (B, N, D).

        `bias`: an additive mask on the attention logits (before the softmax), broadcastable to
        (B, heads, N, N), e.g. `falip.inputs.masks.attention_bias` of FALIP's rows (Eq. 3); None: plain
        attention. It is cast to the tokens' dtype. Raises RuntimeError (from torch) for shapes that
        do not broadcast.
        """
        split = lambda t: t.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))
        return self.out_proj(out.transpose(-3, -2).flatten(-2))


class Mlp(nn.Module):
    """`fc1` -> GELU (tanh approximation, transformers' "gelu_pytorch_tanh") -> `fc2` (`SiglipMLP`)."""

    def __init__(self, width: int, hidden: int):
        """`width`: input and output width D; `hidden`: the inner width (`intermediate_size`)."""
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        return self.fc2(_gelu_tanh(self.fc1(x)))


class Layer(nn.Module):
    """A pre-norm transformer block (`SiglipEncoderLayer`): x + attn(LN1(x)), then x + mlp(LN2(x))."""

    def __init__(self, width: int, heads: int, hidden: int, eps: float):
        """`width` D, `heads`, the MLP's `hidden` width, and the LayerNorms' `eps` (`layer_norm_eps`)."""
        super().__init__()
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
        self.self_attn, self.mlp = Attention(width, heads), Mlp(width, hidden)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); `bias` goes to the attention logits as in `Attention.forward`."""
        x = x + self.self_attn(self.layer_norm1(x), bias)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    """The stack of blocks, kept as `encoder.layers` so that the state dict's names match transformers'.

    It has no `forward`: the towers run the blocks themselves (the vision tower stops and branches per
    region inside the stack)."""

    def __init__(self, layers: int, width: int, heads: int, hidden: int, eps: float):
        """`layers` blocks of `Layer(width, heads, hidden, eps)`, indexed 0 .. layers - 1."""
        super().__init__()
        self.layers = nn.ModuleList(Layer(width, heads, hidden, eps) for _ in range(layers))


class PoolingHead(nn.Module):
    """Attention pooling (`SiglipMultiheadAttentionPoolingHead`): one learned query, the `probe`, over
    the patch tokens, then a residual MLP. Written out with `nn.MultiheadAttention`'s weights so that
    FALIP's bias row can be added to the probe's attention logits (the analogue of form a)."""

    def __init__(self, width: int, heads: int, hidden: int, eps: float):
        """`width` D, `heads`, the MLP's `hidden` width and the LayerNorm's `eps`; `probe` (1, 1, D)."""
        super().__init__()
        self.heads = heads
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, hidden)

    def forward(self, tokens: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) tokens (after `post_layernorm`) -> (B, D) pooled features.

        `bias` (B, N): additive, added to the probe's attention logits in every head (FALIP's row
        without its [CLS] slot); None: plain pooling. Raises RuntimeError (from torch) for a `bias`
        that is not (B, N)."""
        attention = self.attention
        width = tokens.shape[-1]
        dh = width // self.heads
        w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
        q = F.linear(self.probe[0, 0], w_q, b_q).reshape(self.heads, 1, dh)  # (H, 1, dh)
        k = F.linear(tokens, w_k, b_k).unflatten(-1, (self.heads, dh)).transpose(1, 2)  # (B, H, N, dh)
        v = F.linear(tokens, w_v, b_v).unflatten(-1, (self.heads, dh)).transpose(1, 2)
        mask = None if bias is None else bias[:, None, None, :].to(q.dtype)
        out = F.scaled_dot_product_attention(
            q.expand(len(tokens), -1, -1, -1), k, v, attn_mask=mask
        )  # (B, H, 1, dh)
        pooled = attention.out_proj(out.transpose(1, 2).flatten(2))[:, 0]  # (B, D)
        return pooled + self.mlp(self.layernorm(pooled))


class Embeddings(nn.Module):
    """Patch embedding (a stride-`patch_size` convolution) and learned position embeddings, one per
    patch (`SiglipVisionEmbeddings`; no [CLS] token, no class embedding)."""

    def __init__(self, cfg: VisionConfig):
        """`cfg`: the vision config; the position table has `cfg.grid ** 2` rows of width `cfg.width`."""
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.width, cfg.patch_size, cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.grid**2, cfg.width)


class SiglipVision(nn.Module):
    """SigLIP's image tower (`SiglipVisionTransformer`): embeddings, encoder, `post_layernorm` and the
    attention-pooling `head`; the image feature is the head's output (width D, no projection)."""

    def __init__(self, cfg: VisionConfig, heads_hidden: int):
        """`cfg`: the vision config (`config_from_hf`); `heads_hidden`: the pooling head's MLP width."""
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg.layers, cfg.width, cfg.heads, cfg.mlp_dim, cfg.ln_eps)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.head = PoolingHead(cfg.width, cfg.heads, heads_hidden, cfg.ln_eps)

    @property
    def blocks(self) -> nn.ModuleList:
        """The encoder's blocks, 0-based (the name the rest of falip uses for a tower's layers)."""
        return self.encoder.layers

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed pixels (S = `cfg.image_size`) -> (B, N, D) tokens, N = `cfg.grid ** 2`.

        The pixels are moved to the weights' device and dtype. The position table is not interpolated:
        another S raises RuntimeError (from torch, shapes that do not add)."""
        weight = self.embeddings.patch_embedding.weight
        x = self.embeddings.patch_embedding(pixels.to(weight.device, weight.dtype)).flatten(2).transpose(1, 2)
        return x + self.embeddings.position_embedding.weight

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed pixels -> (B, D) image features (unnormalised), without FALIP."""
        x = self.embed(pixels)
        for block in self.blocks:
            x = block(x)
        return self.head(self.post_layernorm(x))

    @torch.no_grad()
    def region_features(
        self,
        pixels: torch.Tensor,
        rows: torch.Tensor,
        image_index: torch.Tensor,
        layers: Sequence[int],
        form: str = "cls",
        chunk_size: int = 32,
    ) -> torch.Tensor:
        """FALIP region features (R, D), unnormalised: the bias on the pooling query (our extension).

        Args:
            pixels: (B, 3, S, S) preprocessed images.
            rows: (R, N + 1) additive bias rows (Eq. 1-3) in the [CLS]-first layout of the rest of
                falip (`falip.inputs.regions.region_bias_rows`); the [CLS] slot is dropped, SigLIP
                has none.
            image_index: (R,) long, the image (0 .. B - 1) of each region.
            layers: 0-based masked layers, negative ones from the end (taken modulo the depth; the
                model checks the range before). Used by forms "all" and "diag" only.
            form: "cls" (form a): the head's query row only, the encoder run once per image and
                shared by its regions (`layers` is not used); "all" (form b) / "diag" (form c): also
                every query row / the diagonal of `layers`, which then run per region.
            chunk_size: regions per batch through the per-region part (memory against speed).
        Raises:
            ValueError: an unknown form (from `attention_bias`).
        """
        patch_rows = rows[:, 1:].to(self.embeddings.patch_embedding.weight)
        x = self.embed(pixels)
        if form == "cls":
            for block in self.blocks:
                x = block(x)
            tokens = self.post_layernorm(x)
            return torch.cat(
                [
                    self.head(tokens[image_index[s : s + chunk_size]], patch_rows[s : s + chunk_size])
                    for s in range(0, len(rows), chunk_size)
                ]
            )
        layers = sorted({int(layer) % len(self.blocks) for layer in layers})
        for block in self.blocks[: layers[0]]:
            x = block(x)
        feats = []
        for s in range(0, len(rows), chunk_size):
            part = patch_rows[s : s + chunk_size]
            h, bias = x[image_index[s : s + chunk_size]], attention_bias(part, form)
            for index in range(layers[0], len(self.blocks)):
                h = self.blocks[index](h, bias if index in layers else None)
            feats.append(self.head(self.post_layernorm(h), part))
        return torch.cat(feats)


class TextEmbeddings(nn.Module):
    """Token and learned position embeddings of the text tower (`SiglipTextEmbeddings`)."""

    def __init__(self, cfg: TextConfig):
        """`cfg`: the text config (`vocab_size` x `width` tokens, `context_length` positions)."""
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.context_length, cfg.width)


class SiglipText(nn.Module):
    """SigLIP's text tower (`SiglipTextTransformer`): no causal mask, the last position pooled, then a
    linear `head` to the shared embedding width."""

    def __init__(self, cfg: TextConfig):
        """`cfg`: the text config (`config_from_hf`)."""
        super().__init__()
        self.cfg = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg.layers, cfg.width, cfg.heads, cfg.mlp_dim, cfg.ln_eps)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.head = nn.Linear(cfg.width, cfg.output_dim)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) long token ids, padded to the full length L <= `context_length` -> (B, output_dim).

        No attention mask: padding is attended to, as SigLIP was trained (the tokenizer pads to
        "max_length"); the feature is the last position's. Raises IndexError / RuntimeError (from
        torch) for ids outside the vocabulary or L > `context_length`."""
        n = token_ids.shape[-1]
        x = self.embeddings.token_embedding(token_ids) + self.embeddings.position_embedding.weight[:n]
        for layer in self.encoder.layers:
            x = layer(x)  # no causal mask: SigLIP's text tower attends both ways
        return self.head(self.final_layer_norm(x)[:, -1])


class SiglipBackbone(nn.Module):
    """SigLIP's two towers, `logit_scale` and `logit_bias`, under transformers' own names."""

    kind = "siglip"

    def __init__(self, cfg: ClipConfig, head_hidden: int):
        """`cfg`: both towers' configs; `head_hidden`: the pooling head's MLP width. `logit_scale` and
        `logit_bias` start at 0 and come from the checkpoint (SigLIP's sigmoid loss:
        logit = exp(logit_scale) * cosine + logit_bias, as transformers' `SiglipModel`)."""
        super().__init__()
        self.cfg = cfg
        self.vision_model = SiglipVision(cfg.vision, head_hidden)
        self.text_model = SiglipText(cfg.text)
        self.logit_scale = nn.Parameter(torch.zeros(1))
        self.logit_bias = nn.Parameter(torch.zeros(1))

    @property
    def visual(self) -> SiglipVision:
        """The image tower, under the name the rest of falip uses (CLIP's `visual`)."""
        return self.vision_model

    @property
    def text(self) -> SiglipText:
        """The text tower, under the name the rest of falip uses."""
        return self.text_model


class SiglipRegionEncoder:
    """The region engine's interface (as `FovealEncoder`) for SigLIP."""

    def __init__(self, visual: SiglipVision, chunk_size: int):
        """`visual`: the tower whose weights are used in place; `chunk_size`: regions per batch by default."""
        self.visual, self.chunk_size = visual, chunk_size

    def __call__(self, pixels, rows, image_index, layers, form="cls", chunk_size=None) -> torch.Tensor:
        """Region features (R, D): `SiglipVision.region_features` with the inputs moved to the weights'
        device; `chunk_size` None uses the encoder's. Same shapes and errors."""
        weight = self.visual.embeddings.patch_embedding.weight
        return self.visual.region_features(
            pixels.to(weight.device, weight.dtype),
            rows.to(weight.device),
            image_index.to(weight.device),
            layers,
            form,
            chunk_size or self.chunk_size,
        )


def config_from_hf(config) -> tuple[ClipConfig, int]:
    """transformers' `SiglipConfig` -> the internal config, and the pooling head's MLP width.

    The text tower's output width is `projection_size` when the config has one (SigLIP 2), else its
    hidden size; the head's MLP width is the vision `intermediate_size`, as in `SiglipMLP`.

    Raises:
        FalipError: an activation other than the tanh GELU (or its "gelu_new"/"gelu_fast" equals), or a
            vision tower without the attention-pooling head (`vision_use_head=False`).
    """
    v, t = config.vision_config, config.text_config
    for name, part in (("vision", v), ("text", t)):
        if part.hidden_act not in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
            raise FalipError(
                f"SigLIP {name} activation {part.hidden_act!r} is not supported (gelu_pytorch_tanh only)"
            )
    if getattr(v, "vision_use_head", True) is False:
        raise FalipError(
            "this SigLIP has no attention-pooling head (vision_use_head=False): nothing to put FALIP's bias "
            "on"
        )
    vision = VisionConfig(
        width=v.hidden_size,
        layers=v.num_hidden_layers,
        heads=v.num_attention_heads,
        patch_size=v.patch_size,
        image_size=v.image_size,
        mlp_dim=v.intermediate_size,
        output_dim=v.hidden_size,
        act="gelu_tanh",
        ln_eps=v.layer_norm_eps,
    )
    text = TextConfig(
        width=t.hidden_size,
        layers=t.num_hidden_layers,
        heads=t.num_attention_heads,
        context_length=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        mlp_dim=t.intermediate_size,
        output_dim=getattr(t, "projection_size", None) or t.hidden_size,
        act="gelu_tanh",
        ln_eps=t.layer_norm_eps,
    )
    return ClipConfig(vision, text), v.intermediate_size


def build(config, state: dict[str, torch.Tensor], source: str) -> SiglipBackbone:
    """A `SiglipBackbone` holding exactly `state` (a `SiglipModel` state dict), in float32, in eval mode.

    Args:
        config: transformers' `SiglipConfig` (see `config_from_hf`).
        state: the checkpoint's tensors under transformers' names (`position_ids` buffers are ignored).
        source: where the weights came from, for the message.
    Raises:
        FalipError: an unsupported config (`config_from_hf`), or names missing from or extra to the
            state dict (the first three are named).
    """
    cfg, head_hidden = config_from_hf(config)
    model = SiglipBackbone(cfg, head_hidden)
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise FalipError(
            f"{source}: weights do not match SigLIP "
            f"({f'missing {missing[:3]}' if missing else f'unexpected {extra[:3]}'})"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()
