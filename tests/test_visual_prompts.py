"""Pixel-editing baselines: each changes exactly what it claims and nothing else."""

import numpy as np
import pytest
from PIL import Image

from falip.errors import FalipError
from falip.tasks.visual_prompts import (
    VISUAL_PROMPTS,
    blur_outside,
    colour_shade,
    compose,
    cpt_text,
    crop,
    get_visual_prompt,
    grayscale_outside,
    red_circle,
)

BOX = (30.0, 20.0, 90.0, 60.0)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 200, size=(80, 120, 3), dtype=np.uint8)  # no pure red anywhere: channels < 200
    return Image.fromarray(arr)


def changed(a, b):
    return np.any(np.asarray(a) != np.asarray(b), axis=-1)


@pytest.mark.parametrize("enlarge", [1.0, 2**0.5])
def test_red_circle_draws_red_only_on_the_ellipse(image, enlarge):
    out = red_circle(image, BOX, thickness=2, enlarge=enlarge)
    diff = changed(out, image)
    assert diff.sum() > 100
    assert np.all(np.asarray(out)[diff] == (255, 0, 0))
    ys, xs = np.nonzero(diff)
    cx, cy, rx, ry = 60, 40, 30 * enlarge, 20 * enlarge
    r = np.sqrt(((xs + 0.5 - cx) / rx) ** 2 + ((ys + 0.5 - cy) / ry) ** 2)
    assert r.max() <= 1 + 1.5 / ry and r.min() >= 1 - 3.5 / ry  # a band of about 2 pixels inside the outline


def test_blur_keeps_the_region_exactly_and_changes_the_rest(image):
    out = blur_outside(image, BOX, std=2.0)
    a, b = np.asarray(out), np.asarray(image)
    assert np.array_equal(a[20:60, 30:90], b[20:60, 30:90])
    outside = np.ones(b.shape[:2], bool)
    outside[20:60, 30:90] = False
    assert changed(out, image)[outside].mean() > 0.9


def test_grayscale_outside(image):
    a = np.asarray(grayscale_outside(image, BOX)).astype(int)
    assert np.array_equal(a[20:60, 30:90], np.asarray(image)[20:60, 30:90])
    assert np.all(a[0, :, 0] == a[0, :, 1]) and np.all(a[:, 0, 1] == a[:, 0, 2])


def test_crop_is_the_box_and_clips_at_borders(image):
    out = crop(image, BOX)
    assert out.size == (60, 40) and np.array_equal(np.asarray(out), np.asarray(image)[20:60, 30:90])
    assert crop(image, (100, 70, 200, 100)).size == (20, 10)
    assert crop(image, BOX, margin=0.5).size == (120, 80)
    with pytest.raises(FalipError):
        crop(image, (200, 0, 300, 10))


def test_colour_shade_blends_the_region_only(image):
    out = colour_shade(image, BOX, opacity=0.5)
    diff = changed(out, image)
    assert diff[20:60, 30:90].mean() > 0.95 and not diff[:20].any() and not diff[60:].any()
    expected = np.rint(0.5 * np.asarray(image, np.float32)[20:60, 30:90] + 0.5 * np.array([255, 0, 0]))
    assert np.array_equal(np.asarray(out)[20:60, 30:90], expected.astype(np.uint8))
    assert cpt_text("the man on the left") == "the man on the left is in red color"


def test_compose_and_registry(image):
    both = compose(blur_outside, red_circle)(image, BOX)
    assert np.array_equal(np.asarray(both), np.asarray(VISUAL_PROMPTS["red_circle+blur"](image, BOX)))
    assert np.any(np.all(np.asarray(both) == (255, 0, 0), axis=-1))
    assert get_visual_prompt("crop") is crop
    with pytest.raises(FalipError, match="unknown visual prompt"):
        get_visual_prompt("arrow")
