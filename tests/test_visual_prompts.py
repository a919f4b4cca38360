"""Pixel-editing baselines: each changes exactly what it claims, with the FALIP authors' values."""

import numpy as np
import pytest
from PIL import Image

from falip.errors import FalipError
from falip.tasks.visual_prompts import (
    TABLE14_ENLARGEMENTS,
    VISUAL_PROMPTS,
    blur_outside,
    blur_outside_ellipse,
    colour_shade,
    cpt_text,
    crop,
    get_visual_prompt,
    grayscale_outside,
    red_circle,
)

BOX = (30.0, 20.0, 60.0, 40.0)  # x, y, w, h: corners (30, 20) and (90, 60)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 200, size=(80, 120, 3), dtype=np.uint8)  # no pure red anywhere: channels < 200
    return Image.fromarray(arr)


def flat(width, height, value=50):
    return Image.fromarray(np.full((height, width, 3), value, np.uint8))


def changed(a, b):
    return np.any(np.asarray(a) != np.asarray(b), axis=-1)


def red_pixels(img):
    return np.all(np.asarray(img) == (255, 0, 0), axis=-1)


def test_red_circle_draws_pure_red_only_on_the_inscribed_ellipse(image):
    out = red_circle(image, BOX)
    diff = changed(out, image)
    assert diff.sum() > 100 and np.all(red_pixels(out)[diff])
    ys, xs = np.nonzero(diff)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (
        30,
        90,
        20,
        60,
    )  # inscribed in the box (PIL's inclusive corners)
    r = np.sqrt(((xs + 0.5 - 60) / 30) ** 2 + ((ys + 0.5 - 40) / 20) ** 2)
    assert r.max() <= 1 + 1.5 / 20 and r.min() >= 1 - 2.5 / 20  # a 1-px band: the image is under 200 px


@pytest.mark.parametrize("size, width", [((1000, 600), 5), ((400, 300), 2), ((150, 100), 1)])
def test_red_circle_width_is_the_authors_max_side_over_200(size, width):
    out = red_circle(
        flat(*size), (size[0] * 0.1, size[1] * 0.1, size[0] * 0.6, size[1] * 0.7), box_format="xyxy"
    )
    row = red_pixels(out)[int(size[1] * 0.4)]  # the ellipse's widest row
    left = np.flatnonzero(row)
    run = np.flatnonzero(np.diff(left) > 1)
    assert (run[0] + 1 if run.size else left.size) == width


@pytest.mark.parametrize("e", TABLE14_ENLARGEMENTS)
def test_table14_enlargements_grow_the_box_by_pixels_and_clip_to_the_image(e):
    img = flat(1000, 600)
    ys, xs = np.nonzero(red_pixels(VISUAL_PROMPTS[f"red_circle_e{e}"](img, (300, 200, 200, 200))))
    expected = (max(300 - e, 0), min(500 + e, 999), max(200 - e, 0), min(400 + e, 599))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == expected


def test_blur_is_a_gaussian_of_std_100_pixels_outside_the_box():
    step = np.zeros((40, 900, 3), np.uint8)
    step[:, 450:] = 255
    img = Image.fromarray(step)
    out = np.asarray(blur_outside(img, (0, 0, 3, 3))).astype(float)
    assert np.array_equal(out[:3, :3], step[:3, :3])  # the box stays
    slope = np.diff(out[30, :, 0])  # the blurred step's derivative is the kernel
    x = np.arange(slope.size) + 0.5
    w = slope / slope.sum()
    std = np.sqrt((w * (x - (w * x).sum()) ** 2).sum())
    assert std == pytest.approx(100, rel=0.05)
    narrow = np.asarray(blur_outside(img, (0, 0, 3, 3), std=10)).astype(float)[30, :, 0]
    assert narrow[410] < 2 and out[30, 410, 0] > 50  # std is an option


def test_blur_keeps_the_box_exactly_and_changes_the_rest(image):
    out = blur_outside(image, BOX)
    a, b = np.asarray(out), np.asarray(image)
    assert np.array_equal(a[20:60, 30:90], b[20:60, 30:90])
    outside = np.ones(b.shape[:2], bool)
    outside[20:60, 30:90] = False
    assert changed(out, image)[outside].mean() > 0.9


def test_table2_blur_keeps_only_the_inscribed_ellipse(image):
    out = blur_outside_ellipse(image, BOX)
    diff = changed(out, image)
    assert not diff[36:44, 40:80].any()  # well inside the ellipse
    assert diff[20:23, 30:33].all() and diff[57:60, 87:90].all()  # box corners lie outside the ellipse
    assert not red_pixels(out).any()


def test_the_authors_circle_is_ellipse_blur_then_red_circle(image):
    both = VISUAL_PROMPTS["red_circle+blur"](image, BOX)
    assert np.array_equal(np.asarray(both), np.asarray(red_circle(blur_outside_ellipse(image, BOX), BOX)))


def test_grayscale_outside(image):
    a = np.asarray(grayscale_outside(image, BOX)).astype(int)
    assert np.array_equal(a[20:60, 30:90], np.asarray(image)[20:60, 30:90])
    assert np.all(a[0, :, 0] == a[0, :, 1]) and np.all(a[:, 0, 1] == a[:, 0, 2])


def test_crop_is_the_box_and_clips_at_borders(image):
    out = crop(image, BOX)
    assert out.size == (60, 40) and np.array_equal(np.asarray(out), np.asarray(image)[20:60, 30:90])
    assert crop(image, (100, 70, 100, 30)).size == (20, 10)
    assert crop(image, BOX, margin=0.5).size == (120, 80)
    with pytest.raises(FalipError):
        crop(image, (200, 0, 100, 10))


def test_cpt_shade_is_240_0_30_at_alpha_127_inside_the_box_only(image):
    out = np.asarray(colour_shade(image, BOX)).astype(float)
    original = np.asarray(image).astype(float)
    expected = (127 * np.array([240.0, 0.0, 30.0]) + (255 - 127) * original[20:60, 30:90]) / 255
    assert np.abs(out[20:60, 30:90] - expected).max() <= 1.0
    assert np.array_equal(out[:20], original[:20]) and np.array_equal(out[60:], original[60:])
    assert np.array_equal(out[:, :30], original[:, :30]) and np.array_equal(out[:, 90:], original[:, 90:])
    assert cpt_text("the man on the left") == "the man on the left is in red color."


def test_registry(image):
    assert get_visual_prompt("crop") is crop
    assert {"red_circle", "blur", "blur_ellipse", "red_circle+blur", "cpt", "red_circle_e200"} <= set(
        VISUAL_PROMPTS
    )
    with pytest.raises(FalipError, match="unknown visual prompt"):
        get_visual_prompt("arrow")


@pytest.mark.parametrize("name", sorted(VISUAL_PROMPTS))
def test_every_prompt_takes_x_y_w_h_and_corners_with_box_format_xyxy(image, name):
    """One box convention across the API: [x, y, w, h] by default, corners with box_format="xyxy"."""
    prompt = VISUAL_PROMPTS[name]
    xywh = np.asarray(prompt(image, BOX))
    corners = np.asarray(prompt(image, (30, 20, 90, 60), box_format="xyxy"))
    assert np.array_equal(xywh, corners)
    if name != "crop" and not name.startswith("red_circle_e"):  # large enlargements clip to the whole image
        assert changed(prompt(image, BOX), prompt(image, (30, 20, 90, 60))).any()  # not read as corners


def test_a_bad_box_format_or_box_is_a_falip_error(image):
    with pytest.raises(FalipError, match="unknown box format 'corners'"):
        red_circle(image, BOX, box_format="corners")
    with pytest.raises(FalipError, match="a box needs 4 numbers"):
        blur_outside(image, (1, 2, 3))
