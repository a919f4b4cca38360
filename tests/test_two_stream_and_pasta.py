"""Table 5's two-stream variants (replace-v, replace-qk) and PASTA, against slow forwards written
out plainly here: explicit per-head matrices, softmax and value mixing, layer by layer."""

import math

import numpy as np
import pytest
import torch

import falip
from conftest import close
from falip.engine.encoder import FovealEncoder
from falip.engine.pasta import pasta_features
from falip.engine.two_stream import two_stream_features
from falip.errors import FalipError
from falip.inputs.masks import parse_heads, select_heads
from falip.tasks.methods import region_features

LAYERS = [3, 4, 5]


def project(block, y, part):
    """One of q (0), k (1), v (2) of `ln_1` output y (B, T, D), as (B, heads, T, head_dim)."""
    width = y.shape[-1]
    w = block.attn.in_proj_weight[part * width : (part + 1) * width]
    b = block.attn.in_proj_bias[part * width : (part + 1) * width]
    heads = block.attn.heads
    return (y @ w.T + b).reshape(y.shape[0], y.shape[1], heads, width // heads).permute(0, 2, 1, 3)


def slow_attention(block, qk_from, v_from, bias=None):
    """Attention output (B, T, D): pattern from `qk_from`'s q and k, values from `v_from`, + bias."""
    q = project(block, block.ln_1(qk_from), 0)
    k = project(block, block.ln_1(qk_from), 1)
    v = project(block, block.ln_1(v_from), 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    probs = torch.softmax(logits, dim=-1)
    mixed = (probs @ v).permute(0, 2, 1, 3).reshape(v_from.shape)
    return mixed @ block.attn.out_proj.weight.T + block.attn.out_proj.bias, probs


def mlp_after(block, x):
    return x + block.mlp(block.ln_2(x))


def slow_two_stream(visual, original, prompted, layers, mode, rows=None):
    o, p = visual.embed(original), visual.embed(prompted)
    for index, block in enumerate(visual.blocks):
        if index not in layers:
            o = mlp_after(block, o + slow_attention(block, o, o)[0])
            p = mlp_after(block, p + slow_attention(block, p, p)[0])
        elif mode == "replace-v":
            o, p = o + slow_attention(block, p, o)[0], p + slow_attention(block, p, p)[0]
            o, p = mlp_after(block, o), mlp_after(block, p)
        else:
            cls_bias = torch.zeros(1, 1, o.shape[1], o.shape[1])
            cls_bias[0, 0, 0] = rows[0]
            o, p = o + slow_attention(block, o, o)[0], p + slow_attention(block, o, p, cls_bias)[0]
            o, p = mlp_after(block, o), mlp_after(block, p)
    return visual.head((o if mode == "replace-v" else p)[:, 0])


def slow_pasta(visual, pixels, inside, heads, scale):
    """Features and the last layer's [CLS] attention (heads, T) under PASTA, plainly."""
    x = visual.embed(pixels)
    probs = None
    for index, block in enumerate(visual.blocks):
        bias = None
        if index in heads:
            bias = torch.zeros(1, block.attn.heads, 1, x.shape[1])
            for h in heads[index]:
                bias[0, h, 0, ~inside] = math.log(scale)
        out, probs = slow_attention(block, x, x, bias)
        x = mlp_after(block, x + out)
    return visual.head(x[:, 0]), probs[0, :, 0]


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(1, 3, 32, 32, generator=gen), torch.randn(2, 3, 32, 32, generator=gen)


def region_rows(tokens, value=1.5):
    rows = torch.zeros(2, tokens)
    rows[0, [1, 2, 5, 6]] = value
    rows[1, [11, 12, 15, 16]] = value
    return rows


@pytest.mark.parametrize("mode", ["replace-v", "replace-qk"])
@pytest.mark.parametrize("layers", [LAYERS, [5], [1, 4]])
def test_two_stream_equals_the_slow_forward(tiny_backbone, images, mode, layers):
    visual = tiny_backbone.visual
    original, prompted = images
    rows = region_rows(visual.cfg.num_tokens)
    fast = two_stream_features(visual, original, prompted, layers, mode, rows, chunk_size=1)
    with torch.no_grad():
        for r in range(2):
            slow = slow_two_stream(visual, original, prompted[r : r + 1], layers, mode, rows[r : r + 1])
            assert torch.allclose(fast[r], slow[0], rtol=1e-5, atol=1e-5 * slow.norm().item())


def test_replace_v_with_an_unchanged_image_is_plain_clip(tiny_backbone, images):
    visual = tiny_backbone.visual
    original, _ = images
    with torch.no_grad():
        plain = visual(original)
    same = two_stream_features(visual, original, original.expand(2, -1, -1, -1), LAYERS, "replace-v")
    assert close(same, plain.expand(2, -1), rel=1e-4)


def test_replace_qk_with_an_unchanged_image_is_plain_at_alpha_0_and_falip_on_one_layer(tiny_backbone, images):
    visual = tiny_backbone.visual
    original, _ = images
    same = original.expand(2, -1, -1, -1)
    rows = region_rows(visual.cfg.num_tokens)
    with torch.no_grad():
        plain = visual(original)
    assert close(
        two_stream_features(visual, original, same, LAYERS, "replace-qk", rows * 0),
        plain.expand(2, -1),
        rel=1e-4,
    )
    falip_one = FovealEncoder(visual)(original, rows, torch.zeros(2, dtype=torch.long), [4])
    assert close(two_stream_features(visual, original, same, [4], "replace-qk", rows), falip_one, rel=1e-4)
    falip_three = FovealEncoder(visual)(original, rows, torch.zeros(2, dtype=torch.long), LAYERS)
    assert not close(
        two_stream_features(visual, original, same, LAYERS, "replace-qk", rows), falip_three, rel=1e-3
    )


def test_two_stream_variants_differ_from_each_other_and_from_plain(tiny_backbone, images):
    visual = tiny_backbone.visual
    original, prompted = images
    rows = region_rows(visual.cfg.num_tokens)
    v = two_stream_features(visual, original, prompted, LAYERS, "replace-v")
    qk = two_stream_features(visual, original, prompted, LAYERS, "replace-qk", rows)
    with torch.no_grad():
        plain, red = visual(original), visual(prompted)
    for a, b in ((v, plain.expand(2, -1)), (v, red), (qk, red), (v, qk)):
        assert (a - b).norm() / b.norm() > 1e-2


def inside_of(rows):
    inside = rows > 0
    inside[:, 0] = False
    return inside


def test_pasta_equals_the_slow_forward_and_is_plain_at_scale_1(tiny_backbone, images):
    visual = tiny_backbone.visual
    pixels, _ = images
    inside = inside_of(region_rows(visual.cfg.num_tokens))
    for heads in ({4: [0, 1, 2, 3], 5: [0, 1, 2, 3]}, {3: [1], 5: [0, 2]}):
        fast = pasta_features(visual, pixels, inside, heads, 0.01, chunk_size=1)
        with torch.no_grad():
            for r in range(2):
                slow, _ = slow_pasta(visual, pixels, inside[r], heads, 0.01)
                assert torch.allclose(fast[r], slow[0], rtol=1e-5, atol=1e-5 * slow.norm().item())
            plain = visual(pixels)
        assert close(pasta_features(visual, pixels, inside, heads, 1.0), plain.expand(2, -1), rel=1e-4)
        assert (fast - plain).norm() / plain.norm() > 1e-2


def test_pasta_drives_cls_attention_outside_the_region_to_zero(tiny_backbone, images):
    visual = tiny_backbone.visual
    pixels, _ = images
    inside = inside_of(region_rows(visual.cfg.num_tokens))[0]
    heads = select_heads(LAYERS, None, 6, 4)
    outside_share = []
    with torch.no_grad():
        for scale in (1.0, 0.1, 0.01, 1e-6):
            _, probs = slow_pasta(visual, pixels, inside, heads, scale)
            outside_share.append(probs[:, ~inside].sum(-1).max().item())
    assert outside_share == sorted(outside_share, reverse=True) and outside_share[0] > 0.3
    assert outside_share[-1] < 1e-4


def test_pasta_heads_parse_and_check():
    assert parse_heads("9:5, 10:0") == [(9, 5), (10, 0)]
    assert select_heads([4, 5], None, 6, 2) == {4: [0, 1], 5: [0, 1]}
    assert select_heads([5], [(-1, 1), (3, 0), (5, 0)], 6, 2) == {3: [0], 5: [0, 1]}
    for bad in ("9", "a:b", "", "9:-1"):
        with pytest.raises(ValueError):
            parse_heads(bad)
    with pytest.raises(ValueError, match="does not exist"):
        select_heads([5], [(6, 0)], 6, 2)


def test_the_methods_through_the_model(hf_dir):
    model = falip.load(hf_dir)
    image = np.random.default_rng(0).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    boxes = [[0, 0, 20, 20], [20, 10, 28, 30]]
    feats = {
        m: region_features(model, image, boxes, m, alpha=2.0)
        for m in ("replace-v", "replace-qk", "pasta", "red_circle", "falip")
    }
    for name, f in feats.items():
        assert f.shape == (2, 16) and torch.allclose(f.norm(dim=1), torch.ones(2)), name
        assert not close(f[0], f[1], rel=1e-3), name
    assert not close(feats["replace-v"], feats["red_circle"], rel=1e-3)
    one_head = region_features(model, image, boxes, "pasta", pasta_heads="5:1")
    assert not close(one_head, feats["pasta"], rel=1e-3)
    assert close(
        region_features(model, image, boxes, "pasta", pasta_scale=1.0),
        region_features(model, image, boxes, "plain"),
        rel=1e-4,
    )
    with pytest.raises(FalipError, match="LAYER:HEAD"):
        region_features(model, image, boxes, "pasta", pasta_heads="5")
    with pytest.raises(FalipError, match="positive"):
        region_features(model, image, boxes, "pasta", pasta_scale=0.0)
    with pytest.raises(FalipError, match="one prompted image per region"):
        model.encode_two_stream(image, [image], boxes, "replace-v")
