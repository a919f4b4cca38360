"""The Table 5 attention ablations: each does what its name says, and none equals FALIP."""

import pytest
import torch

from conftest import close
from falip.engine.ablations import _ablated_block, ablated_features, region_weights
from falip.inputs.masks import attention_bias

LAST = [5]


def rect_rows(tokens: int, inside: list[int], value: float = 0.5) -> torch.Tensor:
    row = torch.zeros(1, tokens)
    row[0, inside] = value
    return row


@pytest.fixture
def pixels():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_weights_are_bias_over_peak_with_cls_one():
    rows = torch.tensor([[0.0, 0.1, 0.2, 0.0]])
    assert torch.allclose(region_weights(rows), torch.tensor([[1.0, 0.5, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="alpha > 0"):
        region_weights(torch.zeros(1, 4))


def test_hard_kv_is_falip_with_an_infinitely_strong_binary_mask(tiny_backbone, pixels):
    visual = tiny_backbone.visual
    inside = [1, 2, 5, 6]
    rows = rect_rows(visual.cfg.num_tokens, inside)
    hard = torch.full((1, visual.cfg.num_tokens), -1e9)
    hard[0, [0, *inside]] = 0.0
    for layers in (LAST, [3, 4, 5]):
        ours = ablated_features(visual, pixels, rows, layers, "ours-hard-kv")
        with torch.no_grad():
            reference = visual(pixels, attention_bias(hard, "cls"), layers)
        assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("operation", ["feature-mask", "ours-hard-kv"])
def test_tokens_outside_the_region_do_not_reach_cls(tiny_backbone, operation):
    block = tiny_backbone.visual.blocks[5]
    tokens = tiny_backbone.visual.cfg.num_tokens
    weights = region_weights(rect_rows(tokens, [1, 2, 5, 6]))
    x = torch.randn(1, tokens, 64, generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[0, 9:] = torch.randn(tokens - 9, 64, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        a, b = (
            _ablated_block(block, x, weights, operation),
            _ablated_block(block, changed, weights, operation),
        )
        plain_a, plain_b = block(x), block(changed)
    assert close(a[0, 0], b[0, 0], rel=1e-4)
    assert not close(plain_a[0, 0], plain_b[0, 0], rel=1e-2), "outside tokens must matter to plain attention"


def test_mean_q_on_one_token_gives_cls_that_token_attention(tiny_backbone):
    block = tiny_backbone.visual.blocks[5]
    tokens = tiny_backbone.visual.cfg.num_tokens
    weights = region_weights(rect_rows(tokens, [7]))
    x = torch.randn(1, tokens, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = _ablated_block(block, x, weights, "ours-mean-q")
        plain = block(x)
        attention = block.attn(block.ln_1(x))  # every row's attention output in plain CLIP
        h = x[0, 0] + attention[0, 7]  # [CLS]'s residual plus the attention output of token 7
        expected = h + block.mlp(block.ln_2(h))
    assert close(out[0, 0], expected, rel=1e-4)
    assert not close(out[0, 0], plain[0, 0], rel=1e-2)
    assert close(out[0, 1:], plain[0, 1:], rel=1e-5), "patch rows stay as in plain CLIP"


@pytest.mark.parametrize("operation", ["feature-mask", "ours-mean-q", "ours-hard-kv"])
def test_each_ablation_differs_from_falip_and_from_plain(tiny_backbone, pixels, operation):
    from falip.engine.encoder import FovealEncoder

    visual = tiny_backbone.visual
    rows = rect_rows(visual.cfg.num_tokens, [1, 2, 5, 6], value=2.0)
    layers = [3, 4, 5]
    ours = ablated_features(visual, pixels, rows, layers, operation)
    falip = FovealEncoder(visual)(pixels, rows, torch.zeros(1, dtype=torch.long), layers)
    with torch.no_grad():
        plain = visual(pixels)
    assert (ours - falip).norm() / falip.norm() > 1e-2
    assert (ours - plain).norm() / plain.norm() > 1e-2


def test_full_weight_feature_mask_is_plain_clip(tiny_backbone, pixels):
    visual = tiny_backbone.visual
    rows = torch.full((2, visual.cfg.num_tokens), 0.3)
    with torch.no_grad():
        plain = visual(pixels)
    for operation in ("feature-mask", "ours-hard-kv"):
        assert close(
            ablated_features(visual, pixels, rows, [3, 4, 5], operation, chunk_size=1),
            plain.expand(2, -1),
            rel=1e-4,
        )
