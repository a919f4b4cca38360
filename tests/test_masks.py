import math

import numpy as np
import pytest
import torch

from conftest import close
from falip.inputs.masks import (
    TokenRect,
    attention_bias,
    bias_row,
    box_to_token_rect,
    coverage_bias_grid,
    default_layers,
    gaussian_patch,
    rect_bias_grid,
    resolve_layers,
)


def test_gaussian_peaks_at_alpha_in_the_centre_and_falls_to_zero_at_the_corners():
    g = gaussian_patch(5, 7, alpha=0.2, sigma=100.0, numerics="exact")
    assert g.shape == (5, 7) and g.dtype == np.float32
    assert g[2, 3] == pytest.approx(0.2, abs=1e-6)
    assert g[0, 0] == pytest.approx(0.0, abs=1e-3) and g[4, 6] == pytest.approx(0.0, abs=1e-3)
    assert close(g, g[::-1, ::-1], rel=1e-2)  # symmetric about the centre


def test_gaussian_follows_exp_minus_d2_over_2_sigma2_after_minmax():
    h, w, sigma = 6, 4, 1.5
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    r = np.exp(-((rows - 2.5) ** 2 + (cols - 1.5) ** 2) / (2 * sigma**2))
    expected = 0.7 * (r - r.min()) / (r.max() - r.min())
    for numerics in ("authors", "exact"):
        assert close(gaussian_patch(h, w, alpha=0.7, sigma=sigma, numerics=numerics), expected, rel=2e-5)


def test_a_single_token_gets_alpha_exactly_or_with_the_authors_float32_overshoot():
    assert gaussian_patch(1, 1, alpha=0.3, sigma=100.0, numerics="exact")[0, 0] == pytest.approx(
        0.3, rel=1e-6
    )
    # float32: (0 + 1e-6) / ((1 + 1e-6) - 1) = 1e-6 / 9.5367e-7, as in the authors' code
    assert gaussian_patch(1, 1, alpha=0.3, sigma=100.0)[0, 0] == pytest.approx(
        0.3 * 1e-6 / 9.5367431640625e-07, rel=1e-5
    )


def test_the_two_numerics_differ_by_float32_rounding_only():
    a = gaussian_patch(6, 9, alpha=0.2, sigma=100.0, numerics="authors")
    e = gaussian_patch(6, 9, alpha=0.2, sigma=100.0, numerics="exact")
    assert 0 < np.abs(a - e).max() <= 0.02 * 0.2
    with pytest.raises(ValueError):
        gaussian_patch(2, 2, 0.2, 100.0, numerics="float16")


def test_authors_rule_pulls_in_the_previous_token_on_an_exact_boundary():
    # x from 16 to 32 input pixels is exactly token column 1; the authors' ceil rule takes 0..1.
    assert box_to_token_rect((16, 16, 32, 32), 224, 16, "authors") == TokenRect(0, 1, 0, 1)
    assert box_to_token_rect((16, 16, 32, 32), 224, 16, "overlap") == TokenRect(1, 1, 1, 1)
    assert box_to_token_rect((17, 17, 31, 31), 224, 16, "authors") == TokenRect(1, 1, 1, 1)


def test_boxes_partly_outside_are_clipped_and_wholly_outside_ones_are_errors():
    assert box_to_token_rect((-50, -5, 40, 40), 224, 16) == box_to_token_rect((0, 0, 40, 40), 224, 16)
    assert box_to_token_rect((200, 0, 400, 40), 224, 16) == TokenRect(0, 2, 12, 13)
    for box in [(230, 0, 300, 40), (-40, 0, -1, 40), (0, 224, 10, 240)]:
        with pytest.raises(ValueError, match="outside"):
            box_to_token_rect(box, 224, 16)


def test_degenerate_boxes_are_errors():
    for box in [(10, 10, 10, 40), (10, 40, 30, 20), (0, 0, math.nan, 5)]:
        with pytest.raises(ValueError):
            box_to_token_rect(box, 224, 16)


def test_rect_bias_is_zero_outside_the_rectangle():
    grid = rect_bias_grid(TokenRect(2, 4, 3, 6), 14, alpha=0.2, sigma=100.0, numerics="exact")
    inside = np.zeros((14, 14), bool)
    inside[2:5, 3:7] = True
    assert np.all(grid[~inside] == 0) and grid[inside].max() == pytest.approx(0.2)


def test_coverage_weights_the_gaussian_and_leaves_uncovered_tokens_at_zero():
    coverage = np.zeros((4, 4), np.float32)
    coverage[1, 1], coverage[1, 2], coverage[2, 1] = 1.0, 0.5, 0.25
    grid = coverage_bias_grid(coverage, alpha=1.0, sigma=100.0)
    box = rect_bias_grid(TokenRect(1, 2, 1, 2), 4, alpha=1.0, sigma=100.0)
    np.testing.assert_allclose(grid, box * coverage)
    assert grid[2, 2] == 0.0
    with pytest.raises(ValueError):
        coverage_bias_grid(np.zeros((4, 4)), 1.0, 1.0)


def test_bias_row_puts_cls_first_with_zero():
    grid = np.arange(16, dtype=np.float32).reshape(4, 4)
    row = bias_row(grid)
    assert row.shape == (17,) and row[0] == 0 and torch.equal(row[1:], torch.arange(16.0))


def test_mask_forms_place_the_row_where_the_paper_says():
    rows = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 4.0]])
    cls = attention_bias(rows, "cls")
    assert cls.shape == (2, 1, 3, 3) and torch.equal(cls[:, 0, 0], rows) and not cls[:, 0, 1:].any()
    full = attention_bias(rows, "all").expand(2, 1, 3, 3)
    assert torch.equal(full[1, 0, 2], rows[1]) and torch.equal(full[0, 0, 0], rows[0])
    diag = attention_bias(rows, "diag")
    assert torch.equal(diag[1, 0], torch.diag(rows[1]))
    with pytest.raises(ValueError):
        attention_bias(rows, "rows")


def test_default_layers_are_the_last_third_and_indices_are_validated():
    assert default_layers(12) == [8, 9, 10, 11]
    assert default_layers(24) == list(range(16, 24))
    assert default_layers(2) == [1]
    assert resolve_layers([-1, -2, 9, 9], 12) == [9, 10, 11]
    assert resolve_layers(None, 12) == [8, 9, 10, 11]
    for bad in ([12], [-13], []):
        with pytest.raises(ValueError):
            resolve_layers(bad, 12)
