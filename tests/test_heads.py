"""The [CLS] decomposition (Eq. 5), its joint-space projection, and unleash (Eq. 6)."""

import numpy as np
import pytest
import torch

import falip
from conftest import close
from falip.engine.decompose import decompose, joint_parts
from falip.engine.unleash import head_deltas, unleash_features
from falip.inputs.masks import attention_bias
from falip.tasks.methods import region_features

LAST4 = [2, 3, 4, 5]


@pytest.fixture
def images():
    gen = torch.Generator().manual_seed(5)
    return torch.randn(1, 3, 32, 32, generator=gen), torch.randn(3, 3, 32, 32, generator=gen)


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("biased", [False, True])
def test_the_terms_sum_to_the_residual_and_the_projected_terms_to_encode_image(tiny_backbone, images, biased):
    visual = tiny_backbone.visual
    pixels = torch.cat(images)
    rows = torch.zeros(4, visual.cfg.num_tokens)
    rows[:, [1, 2, 5]] = 2.0
    bias = attention_bias(rows) if biased else None
    parts = decompose(visual, pixels, bias, LAST4 if biased else (), token_layers=[1, 5])
    with torch.no_grad():
        x = visual.embed(pixels)
        for index, block in enumerate(visual.blocks):
            x = block(x, bias if biased and index in LAST4 else None)
        features = visual(pixels, bias, LAST4 if biased else ())
    assert relative(parts.residual(), x[:, 0]) < 1e-5
    assert relative(parts.final, x[:, 0]) < 1e-6
    for layer in (1, 5):  # per token, the head terms again
        assert relative(parts.tokens[layer].sum(2), parts.heads[:, layer]) < 1e-5
    joint = joint_parts(visual, parts)
    total = (
        joint["embedding"]
        + joint["heads"].sum((1, 2))
        + joint["attn_bias"].sum(1)
        + joint["mlp"].sum(1)
        + joint["ln_bias"]
    )
    assert relative(total, features) < 1e-5
    assert relative(joint["tokens_5"].sum(2), joint["heads"][:, 5]) < 1e-5


def test_a_head_term_is_that_heads_share_of_the_attention_output(tiny_backbone, images):
    visual = tiny_backbone.visual
    pixels = images[0]
    parts = decompose(visual, pixels)
    with torch.no_grad():
        x = visual.embed(pixels)
        for block in visual.blocks[:3]:
            x = block(x)
        block = visual.blocks[3]
        attention = block.attn(block.ln_1(x))[:, 0]  # the whole [CLS] attention output of layer 3
        # zero every head's values but head 1: the output is then head 1's term plus the out-projection bias
        y = block.ln_1(x)
        q, k, v = block.attn.qkv(y)
        keep = torch.zeros(1, block.attn.heads, 1, 1)
        keep[0, 1] = 1.0
        only = block.attn.attend(q, k, v * keep)[:, 0]
    assert relative(parts.heads[:, 3].sum(1) + parts.attn_bias[3], attention) < 1e-5
    assert relative(parts.heads[:, 3, 1] + parts.attn_bias[3], only) < 1e-5


def slow_unleash(visual, original, prompted, layers):
    """Two plain forwards; the prompted one's final [CLS] plus, in `layers`, its [CLS] attention
    output minus the original's, then ln_post and the projection."""

    def run(pixels):
        x, outputs = visual.embed(pixels), {}
        for index, block in enumerate(visual.blocks):
            out = block.attn(block.ln_1(x))
            outputs[index] = out[:, 0]
            x = x + out
            x = x + block.mlp(block.ln_2(x))
        return x[:, 0], outputs

    with torch.no_grad():
        _, plain = run(original)
        final, edited = run(prompted)
        return visual.head(final + sum(edited[layer] - plain[layer] for layer in layers))


def test_unleash_equals_two_plain_forwards_with_the_attention_difference_added(tiny_backbone, images):
    visual = tiny_backbone.visual
    original, prompted = images
    for layers in (LAST4, [5], [0, 3]):
        fast = unleash_features(visual, original, prompted, layers, chunk_size=2)
        assert relative(fast, slow_unleash(visual, original, prompted, layers)) < 1e-5


def test_unleash_with_an_unchanged_image_is_plain_and_every_head_is_the_default(tiny_backbone, images):
    visual = tiny_backbone.visual
    original, prompted = images
    with torch.no_grad():
        plain = visual(original)
    assert (
        relative(
            unleash_features(visual, original, original.expand(2, -1, -1, -1), LAST4), plain.expand(2, -1)
        )
        < 1e-5
    )
    every = [(layer, head) for layer in LAST4 for head in range(visual.cfg.heads)]
    default = unleash_features(visual, original, prompted, LAST4)
    assert relative(unleash_features(visual, original, prompted, LAST4, heads=every), default) < 1e-6
    some = unleash_features(visual, original, prompted, LAST4, heads=[(5, 0), (4, 2)])
    assert relative(some, default) > 1e-3
    with torch.no_grad():
        assert relative(default, visual(prompted)) > 1e-3  # unleash moves the prompted feature


def test_head_deltas_are_prompted_minus_original_per_head(tiny_backbone, images):
    visual = tiny_backbone.visual
    original, prompted = images
    deltas, finals = head_deltas(visual, original, prompted)
    assert deltas.shape == (3, 6, visual.cfg.heads, 64)
    expected = decompose(visual, prompted[1:2]).heads - decompose(visual, original).heads
    assert close(deltas[1:2], expected, rel=1e-5)


def test_unleash_methods_through_the_model(hf_dir):
    model = falip.load(hf_dir)
    image = np.random.default_rng(0).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    boxes = [[0, 0, 20, 20], [20, 10, 28, 30]]
    red = region_features(model, image, boxes, "red_circle")
    unleashed = region_features(model, image, boxes, "red_circle+unleash")
    assert unleashed.shape == (2, 16) and torch.allclose(unleashed.norm(dim=1), torch.ones(2))
    assert not close(unleashed, red, rel=1e-3)
    every = ",".join(f"{layer}:{head}" for layer in (4, 5) for head in range(4))
    assert close(
        region_features(model, image, boxes, "red_circle+unleash", unleash_heads=every), unleashed, rel=1e-5
    )
    assert not close(
        region_features(model, image, boxes, "red_circle+unleash", unleash_layers=[5]), unleashed, rel=1e-3
    )
    both = region_features(model, image, boxes, "red_circle+blur+unleash")
    assert not close(both, unleashed, rel=1e-3)


def test_heads_rank_writes_the_csv_and_the_png_and_resumes(tmp_path):
    import csv
    import json

    from click.testing import CliRunner

    from falip.cli.app import cli

    args = ["heads", "rank", "scenes", "--count", "3", "--out", str(tmp_path), "--quiet", "--top", "3"]
    result = CliRunner().invoke(cli, args + ["--limit", "2"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    result = CliRunner().invoke(cli, args)  # resumes: the third scene only
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == ["test/0", "test/1", "test/2"]
    rows = list(csv.DictReader(open(tmp_path / "heads.csv")))
    model = falip.load()
    assert len(rows) == model.depth * model.backbone.cfg.vision.heads
    effects = [float(r["effect"]) for r in rows]
    assert effects == sorted(effects, reverse=True) and effects[0] > 0
    # the effect is the mean over regions of ||G' - G||, recomputed here for one head
    from falip.datasets import open_rec, read_image
    from falip.inputs.images import open_image
    from falip.tasks.visual_prompts import red_circle

    layer, head = int(rows[0]["layer"]), int(rows[0]["head"])
    norms = []
    for item in open_rec("scenes", count=3):
        image = open_image(read_image(item.image))
        original = decompose(model.backbone.visual, model.pixels(image)).heads[0, layer, head]
        for box in item.boxes:
            edited = decompose(model.backbone.visual, model.pixels(red_circle(image, box))).heads[
                0, layer, head
            ]
            norms.append((edited - original).norm().item())
    assert float(rows[0]["effect"]) == pytest.approx(np.mean(norms), rel=1e-4)
    assert (tmp_path / "heads.png").stat().st_size > 5000
    assert "--unleash-heads" in result.output


def test_explain_writes_every_picture_for_a_scene_and_returns_the_arrays(tmp_path):
    from click.testing import CliRunner

    from falip.cli.app import cli
    from falip.datasets.scene_world import make_scene
    from falip.viz.explain import explain

    result = CliRunner().invoke(cli, ["explain", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (
        "FALIP setting: alpha 0.2, sigma 100, layers 8-11 (0-based; the last third), form cls: the paper's "
        "setting" in result.output
    )
    for name in (
        "attention",
        "heads",
        "heads_attention",
        "contributions",
        "foveal_mask",
        "relevance",
        "chefer",
    ):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000, name
    model = falip.load()
    scene = make_scene("test", 2_000_000, 128, objects=(3, 4))
    box = list(scene.objects[0].box)
    arrays = explain(model, scene.pil(), box, alpha=5.0).arrays
    grid = model.backbone.cfg.vision.grid
    assert all(a.shape == (grid, grid) for a in arrays.values())
    inside = model.region_rows(scene.pil().size, [box], alpha=1.0)[0, 1:].reshape(grid, grid).numpy() > 0
    share = {k: arrays[k][inside].sum() / arrays[k].sum() for k in ("attention_plain", "attention_falip")}
    assert share["attention_falip"] > share["attention_plain"] + 0.05  # alpha 5: [CLS] looks at the box
    assert (
        arrays["mask_alpha0.2_sigma1"].max() == pytest.approx(0.2, rel=0.06)
        and not arrays["mask_alpha0.2_sigma1"][~inside].any()
    )
    assert "contribution_original" not in arrays  # no text, no contributions
    bad = CliRunner().invoke(cli, ["explain", "--head", "30:0", "--out", str(tmp_path)])
    assert "does not exist" in str(bad.exception)


def test_chefer_relevance_equals_a_plain_gradient_computation(tiny_backbone, images):
    from falip.engine.decompose import gradient_relevance
    from test_two_stream_and_pasta import slow_attention

    visual = tiny_backbone.visual
    pixels = images[0]
    target = torch.randn(16, generator=torch.Generator().manual_seed(9))
    ours = gradient_relevance(visual, pixels, target)
    x = visual.embed(pixels)
    probs = []
    for block in visual.blocks:
        out, p = slow_attention(block, x, x)
        probs.append(p)
        x = x + out
        x = x + block.mlp(block.ln_2(x))
    cosine = torch.nn.functional.cosine_similarity(visual.head(x[:, 0]), target[None]).sum()
    grads = torch.autograd.grad(cosine, probs)
    relevance = torch.eye(x.shape[1])
    for p, g in zip(probs, grads):
        relevance = relevance + (g * p).clamp(min=0).mean(1)[0] @ relevance
    assert torch.allclose(ours[0], relevance[0].detach(), rtol=1e-4, atol=1e-6)
    assert ours[0, 0] >= 1 and (ours >= 0).all()


def test_a_gandelsman_head_map_equals_a_plainly_written_computation(tiny_backbone, images):
    """Gandelsman et al.'s map (their prs_hook.py) for head h of layer l, token i: the [CLS] row's term
    c_i = p^h_{0,i} v^h_i W_O^h + b_O / (T H), through ln_post spread over the K = 2L + 1 residual terms
    (w * (c_i - mean(r) / (K T H)) / sqrt(var(r) + eps) + b / (K T H)), projected, divided by the
    norm of the image embedding and dotted with the unit text. Written here with plain matrix
    products; every term of the decomposition sums to the cosine."""
    import copy

    from falip.engine.decompose import text_span
    from test_two_stream_and_pasta import mlp_after, project, slow_attention

    visual = copy.deepcopy(tiny_backbone.visual)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # an ln_post that is not the identity, so its weight and bias are exercised
        visual.ln_post.weight.copy_(1 + 0.5 * torch.randn(visual.ln_post.weight.shape, generator=gen))
        visual.ln_post.bias.copy_(0.3 * torch.randn(visual.ln_post.bias.shape, generator=gen))
    pixels = images[0]
    text = torch.randn(16, generator=gen)
    layer, head = 4, 1
    depth, heads = len(visual.blocks), visual.cfg.heads

    with torch.no_grad():
        x = visual.embed(pixels)
        tokens, width = x.shape[1], x.shape[2]
        dh = width // heads
        for index, block in enumerate(visual.blocks):
            out, probs = slow_attention(block, x, x)
            if index == layer:
                v = project(block, block.ln_1(x), 2)[0, head]  # (T, dh)
                w_o = block.attn.out_proj.weight.T[head * dh : (head + 1) * dh]  # (dh, width)
                terms = probs[0, head, 0][:, None] * (v @ w_o) + block.attn.out_proj.bias / (tokens * heads)
            x = mlp_after(block, x + out)
        r = x[0, 0]
        mean, sd = r.mean(), torch.sqrt(((r - r.mean()) ** 2).mean() + visual.ln_post.eps)
        share = (2 * depth + 1) * tokens * heads
        post = visual.ln_post.weight * (terms - mean / share) / sd + visual.ln_post.bias / share
        embedding = visual.head(x[:, 0])[0]
        expected = (post @ visual.proj) @ (text / text.norm()) / embedding.norm()  # (T,)
        cosine = torch.nn.functional.cosine_similarity(embedding, text, dim=0)

    span = text_span(visual, pixels, text)
    scale = expected.abs().max()
    assert torch.allclose(span.head_map(layer, head)[0], expected, rtol=0, atol=1e-5 * scale)
    assert span.total()[0] == pytest.approx(cosine.item(), rel=1e-4)
    assert span.cosine[0] == pytest.approx(cosine.item(), rel=1e-5)
    bias = attention_bias(torch.rand(1, tokens) * 2)  # a FALIP-style bias on [CLS]'s row, in the last layers
    biased = text_span(visual, pixels, text, bias, LAST4)
    feature = visual(pixels, bias, LAST4)[0]
    assert biased.total()[0] == pytest.approx(
        torch.nn.functional.cosine_similarity(feature, text, dim=0).item(), rel=1e-4
    )
    assert not torch.allclose(biased.token_map(), span.token_map())
