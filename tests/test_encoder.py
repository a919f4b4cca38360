"""The fast foveal encoder must equal one plain masked forward per region."""

import pytest
import torch

from falip.engine.encoder import FovealEncoder
from falip.inputs.masks import attention_bias


def random_rows(count: int, tokens: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.zeros(count, tokens)
    rows[:, 1:] = (
        torch.rand(count, tokens - 1, generator=gen)
        * 2.0
        * (torch.rand(count, tokens - 1, generator=gen) > 0.4)
    )
    return rows


def one_at_a_time(visual, pixels, rows, image_index, layers, form):
    with torch.no_grad():
        return torch.cat(
            [
                visual(pixels[image_index[r]][None], attention_bias(rows[r : r + 1], form), layers)
                for r in range(len(rows))
            ]
        )


def max_rel(a, b):
    return ((a - b).norm(dim=-1) / b.norm(dim=-1)).max().item()


@pytest.mark.parametrize("layers", [[5], [4, 5], [2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [1, 4], [3], [0]])
@pytest.mark.parametrize("form", ["cls", "all", "diag"])
def test_fast_path_equals_one_masked_forward_per_region(tiny_backbone, layers, form):
    visual = tiny_backbone.visual
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rows = random_rows(5, visual.cfg.num_tokens)
    image_index = torch.tensor([0, 1, 0, 1, 1])
    fast = FovealEncoder(visual, chunk_size=2)(pixels, rows, image_index, layers, form)
    slow = one_at_a_time(visual, pixels, rows, image_index, layers, form)
    assert max_rel(fast, slow) <= 1e-5
    plain = visual(pixels)[image_index]
    if form != "diag" or layers != [5]:  # a diagonal mask in the last layer cannot reach [CLS]
        assert max_rel(slow, plain) > 1e-3, (
            "the masks must change the features for this test to mean anything"
        )


def test_zero_bias_gives_plain_clip_and_duplicates_are_computed_once(tiny_backbone, monkeypatch):
    visual = tiny_backbone.visual
    pixels = torch.randn(1, 3, 32, 32)
    rows = random_rows(3, visual.cfg.num_tokens)
    rows = torch.cat([rows, rows[:1], torch.zeros(1, visual.cfg.num_tokens)])
    encoder = FovealEncoder(visual)
    seen = []
    original = encoder._cls_form
    monkeypatch.setattr(encoder, "_cls_form", lambda x, r, *a: seen.append(len(r)) or original(x, r, *a))
    feats = encoder(pixels, rows, torch.zeros(5, dtype=torch.long), [3, 4, 5])
    assert seen == [4]  # five regions, one repeated: four computed
    assert torch.equal(feats[0], feats[3])
    assert max_rel(feats[4:], visual(pixels)) <= 1e-5


def test_hundreds_of_regions_in_small_chunks_match_one_big_chunk(tiny_backbone):
    visual = tiny_backbone.visual
    pixels = torch.randn(1, 3, 32, 32)
    rows = random_rows(300, visual.cfg.num_tokens, seed=3)
    index = torch.zeros(300, dtype=torch.long)
    big = FovealEncoder(visual, chunk_size=512)(pixels, rows, index, [3, 4, 5])
    small = FovealEncoder(visual, chunk_size=7)(pixels, rows, index, [5, 3, 4, 4])  # any order, repeats
    assert max_rel(small, big) <= 1e-6


def test_half_precision_runs_and_stays_close(tiny_backbone):
    pixels = torch.randn(1, 3, 32, 32)
    rows = random_rows(4, tiny_backbone.cfg.vision.num_tokens)
    index = torch.zeros(4, dtype=torch.long)
    ref = FovealEncoder(tiny_backbone.visual)(pixels, rows, index, [3, 4, 5])
    visual16 = tiny_backbone.to(torch.bfloat16).visual
    low = FovealEncoder(visual16)(pixels.bfloat16(), rows, index, [3, 4, 5])
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert max_rel(low.float(), ref) < 0.1


def test_bad_rows_are_rejected(tiny_backbone):
    encoder = FovealEncoder(tiny_backbone.visual)
    with pytest.raises(ValueError, match="bias rows"):
        encoder(torch.randn(1, 3, 32, 32), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long), [5])
    with pytest.raises(ValueError, match="form"):
        encoder(torch.randn(1, 3, 32, 32), torch.zeros(2, 17), torch.zeros(2, dtype=torch.long), [5], "rows")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_backbone):
    pixels = torch.randn(1, 3, 32, 32)
    rows = random_rows(4, tiny_backbone.cfg.vision.num_tokens)
    index = torch.zeros(4, dtype=torch.long)
    cpu = FovealEncoder(tiny_backbone.visual)(pixels, rows, index, [3, 4, 5])
    gpu = FovealEncoder(tiny_backbone.cuda().visual)(pixels.cuda(), rows.cuda(), index.cuda(), [3, 4, 5])
    assert max_rel(gpu.cpu(), cpu) <= 1e-4


@pytest.mark.parametrize(
    "patch, size", [(32, 224), (14, 224), (14, 336)]
)  # B/32 7x7, L/14 16x16, L/14@336 24x24
def test_any_patch_size_and_resolution(patch, size):
    from falip.backbones import ClipBackbone, ClipConfig, TextConfig, VisionConfig
    from falip.inputs.preprocess import Preprocessing
    from falip.inputs.regions import region_bias_rows

    vision = VisionConfig(
        width=64, layers=4, heads=2, patch_size=patch, image_size=size, mlp_dim=64, output_dim=8
    )
    text = TextConfig(width=32, layers=1, heads=1, context_length=8, vocab_size=16, mlp_dim=32, output_dim=8)
    visual = ClipBackbone(ClipConfig(vision, text)).init_random(seed=1, std=0.2).eval().visual
    grid = size // patch
    rows = region_bias_rows(
        [[0, 0, 300, 200], [250, 260, 150, 140]], (400, 400), Preprocessing(size), patch, alpha=1.0, sigma=2.0
    )
    assert rows.shape == (2, grid * grid + 1)
    last_token = rows[1, 1:].reshape(grid, grid)
    assert last_token[-1, -1] > 0 and last_token[0, 0] == 0  # the second box reaches the bottom-right corner
    pixels = torch.randn(1, 3, size, size)
    index = torch.zeros(2, dtype=torch.long)
    fast = FovealEncoder(visual)(pixels, rows, index, [2, 3])
    assert max_rel(fast, one_at_a_time(visual, pixels, rows, index, [2, 3], "cls")) <= 1e-5
