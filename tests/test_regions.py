"""Preprocessing geometry and the mapping from user regions to token biases."""

import numpy as np
import pytest
import torch
from PIL import Image

from falip.errors import FalipError
from falip.inputs.geometry import geometry_for
from falip.inputs.preprocess import Preprocessing
from falip.inputs.regions import region_bias_rows, to_xyxy


def rows_of(regions, size, mode="squash", **kw):
    return region_bias_rows(regions, size, Preprocessing(224, mode), 16, alpha=0.2, sigma=100.0, **kw)


def support(row):
    return set(torch.nonzero(row[1:]).squeeze(1).tolist())


def test_geometry_of_each_mode():
    g = geometry_for("squash", 640, 480, 224)
    assert (g.map_x(640), g.map_y(480)) == (224, 224)
    g = geometry_for("crop", 640, 480, 224)  # 298x224 after resize, 37 cut on the left
    assert (g.resized_width, g.resized_height) == (298, 224) and g.offset_x == -37.0
    assert g.map_x(320) == pytest.approx(112, abs=0.5) and g.map_y(480) == pytest.approx(224)
    g = geometry_for("pad", 640, 480, 224)  # 640x640 canvas, 80 px of padding on top
    assert g.map_y(0) == pytest.approx(80 * 224 / 640) and g.map_x(640) == pytest.approx(224)
    with pytest.raises(ValueError):
        geometry_for("stretch", 10, 10, 224)


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_a_mapped_box_covers_the_pixels_the_model_sees(mode):
    """A white rectangle in the image lands exactly where the box maps, in the model's input."""
    img = np.zeros((300, 500, 3), np.uint8)
    x0, y0, x1, y1 = 180, 90, 330, 210
    img[y0:y1, x0:x1] = 255
    prep = Preprocessing(224, mode)
    pixels = prep.pixels(img)[0] * prep.std[0] + prep.mean[0]  # back to [0, 1]
    g = prep.geometry(500, 300)
    a0, b0, a1, b1 = (round(v) for v in (g.map_x(x0), g.map_y(y0), g.map_x(x1), g.map_y(y1)))
    inside = pixels[b0 + 2 : b1 - 2, a0 + 2 : a1 - 2]
    assert inside.min() > 0.95
    outside = pixels.clone()
    outside[max(b0 - 2, 0) : b1 + 2, max(a0 - 2, 0) : a1 + 2] = 0
    assert outside.max() < 0.05 or mode == "pad" and outside.max() < 0.55  # pad fills with the mean colour


def test_boxes_use_xywh_by_default_and_xyxy_on_request():
    assert to_xyxy([10, 20, 30, 40]) == (10, 20, 40, 60)
    assert to_xyxy([10, 20, 30, 40], "xyxy") == (10, 20, 30, 40)
    a = rows_of([[100, 50, 200, 100]], (640, 480))
    b = rows_of([[100, 50, 300, 150]], (640, 480), box_format="xyxy")
    assert torch.equal(a, b)
    with pytest.raises(FalipError):
        to_xyxy([1, 2, 3])


def test_crop_mode_refuses_a_box_in_the_cropped_away_strip():
    with pytest.raises(FalipError, match="region 0: .*outside"):
        rows_of([[0, 0, 40, 480]], (640, 480), "crop")
    assert support(rows_of([[0, 0, 200, 480]], (640, 480), "crop")[0])


def test_degenerate_and_outside_boxes_are_clear_errors_naming_the_region():
    with pytest.raises(FalipError, match="region 1: .*zero"):
        rows_of([[0, 0, 10, 10], [5, 5, 0, 10]], (100, 100))
    with pytest.raises(FalipError, match="region 0: .*outside the 100x100 image"):
        rows_of([[150, 0, 10, 10]], (100, 100))
    with pytest.raises(FalipError, match="no region"):
        rows_of([], (100, 100))


def test_box_partly_outside_equals_the_clipped_box():
    assert torch.equal(rows_of([[-30, -30, 130, 90]], (640, 480)), rows_of([[0, 0, 100, 60]], (640, 480)))
    assert torch.equal(rows_of([[600, 400, 100, 200]], (640, 480)), rows_of([[600, 400, 40, 80]], (640, 480)))


def test_a_mask_of_a_token_aligned_box_covers_the_same_tokens_as_the_box():
    mask = np.zeros((224, 224), bool)
    mask[32:96, 48:128] = True
    box = [48, 32, 80, 64]
    by_mask = rows_of([mask], (224, 224))[0]
    by_box = rows_of([box], (224, 224), box_rule="overlap")[0]
    assert torch.allclose(by_mask, by_box)
    assert support(rows_of([box], (224, 224))[0]) > support(
        by_box
    )  # the authors' rule adds a row and a column


def test_a_free_form_mask_weights_edge_tokens_by_coverage():
    mask = np.zeros((224, 224), bool)
    mask[40:72, 40:72] = True  # covers 4 tokens fully and 12 in part
    row = rows_of([mask], (224, 224))[0].reshape(-1)[1:].reshape(14, 14)
    assert row[3, 3] > row[2, 2] > 0 and row[0, 0] == 0
    pil_mask = Image.fromarray(mask.astype(np.uint8) * 255)
    assert torch.equal(rows_of([pil_mask], (224, 224)), rows_of([mask], (224, 224)))
    with pytest.raises(FalipError, match="shape"):
        rows_of([mask[:100]], (224, 224))


def test_the_region_door_checks_once_and_passes_checked_values_through():
    from falip.inputs.regions import Box, Mask, check_regions

    mask = np.zeros((40, 60), bool)
    mask[5:9, 10:20] = True
    checked = check_regions([[10, 5, 20, 4], mask, Image.fromarray(mask.astype(np.uint8) * 255)], (60, 40))
    assert isinstance(checked[0], Box) and checked[0].xyxy == (10.0, 5.0, 30.0, 9.0)
    assert checked[0].xywh == [10.0, 5.0, 20.0, 4.0]
    assert (
        isinstance(checked[1], Mask)
        and (checked[1].pixels == mask).all()
        and (checked[2].pixels == mask).all()
    )
    assert check_regions(checked, (60, 40))[0] is checked[0]  # already checked: the same value, not re-made
    assert check_regions([1, 2, 3, 4], (60, 40)) == [Box(1.0, 2.0, 4.0, 6.0)]  # one box alone
    assert check_regions([[1, 2, 3, 4]], (60, 40), "xyxy") == [Box(1.0, 2.0, 3.0, 4.0)]
    for regions, message in (
        ([], "no region given"),
        ([[1, 2, 3]], "region 0: a box needs 4 numbers"),
        ([[0, 0, 5, 5], [1, 2, 0, 4]], "region 1: box has zero or negative width or height"),
        ([[70, 0, 5, 5]], "region 0: box lies wholly outside the 60x40 image"),
        ([np.ones((4, 4))], r"region 0: mask shape \(4, 4\) does not match the image \(40, 60\)"),
        ([[1, float("nan"), 3, 4]], "region 0: a box's numbers must be finite"),
    ):
        with pytest.raises(FalipError, match=message):
            check_regions(regions, (60, 40))
    with pytest.raises(FalipError, match="unknown box format 'cxcywh'"):
        check_regions([[1, 2, 3, 4]], (60, 40), "cxcywh")
