"""Evaluation on scenes: confidence intervals, chance, and the task counts."""

import pytest

import falip
from falip.toy.evaluate import Accuracy, Evaluator, Setting, Split, rec_chance, rec_groups


def test_wilson_interval():
    lo, hi = Accuracy(8, 10).interval()
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    lo, hi = Accuracy(0, 50).interval()
    assert lo == 0.0 and hi == pytest.approx(0.0713, abs=1e-4)
    assert "80.0% [49.0, 94.3] (n=10)" == str(Accuracy(8, 10))


def test_chance_is_the_mean_of_one_over_boxes():
    split = Split.make("val", 0, 12, size=32)
    expected = [1 / len(s.objects) for s in split.multis for _ in s.expressions()]
    acc = rec_chance(split.multis)
    assert acc.total == len(expected) and acc.value == pytest.approx(sum(expected) / len(expected))


def test_expressions_are_grouped_by_what_they_name():
    assert rec_groups("the red circle", "attribute") == ["rec", "rec_attribute", "rec_colour"]
    assert rec_groups("the cross", "attribute") == ["rec", "rec_attribute", "rec_shape"]
    assert rec_groups("the big striped circle", "attribute") == ["rec", "rec_attribute"]
    assert rec_groups("the left red circle", "relational") == ["rec", "rec_relational", "rec_colour"]
    assert rec_groups("the left circle", "relational") == ["rec", "rec_relational"]
    split = Split.make("val", 0, 12, size=32)
    shape_only = [1 / len(s.objects) for s in split.multis for e in s.expressions() if len(e[1].split()) == 2]
    assert rec_chance(split.multis, "rec_shape").total == len(shape_only) > 0


def test_without_a_region_prompt_every_box_ties_and_the_first_wins(hf_dir):
    model = falip.load(hf_dir)
    split = Split.make("val", 6, 10, size=32)
    ev = Evaluator(model)
    res = ev.regions(split.multis, Setting(alpha=0.0))
    exprs = [(s, e) for s in split.multis for e in s.expressions()]
    assert res["rec"].total == len(exprs)
    assert res["rec"].correct == sum(e[0] == 0 for _, e in exprs)  # identical scores: argmax is box 0
    assert res["rec_attribute"].total + res["rec_relational"].total == len(exprs)
    assert res["rec_colour"].total == sum(
        any(c in e[1] for c in ("red", "green", "blue", "yellow", "purple", "orange")) for _, e in exprs
    )
    assert res["rec_shape"].correct == sum(e[0] == 0 for _, e in exprs if len(e[1].split()) == 2)
    assert res["region_cls"].total == sum(len(s.objects) for s in split.multis)
    assert ev.naming(split.singles).total == 6


def test_linear_probe_finds_what_the_features_encode():
    """A fake model whose image feature is the colour alone: colour is read perfectly, shape is not."""
    import torch

    from falip.toy.evaluate import linear_probe

    class ColourOnly:
        def encode_image(self, images):  # the RGB of the most saturated pixel: the object's colour
            out = []
            for img in images:
                flat = torch.as_tensor(img.reshape(-1, 3), dtype=torch.float32)
                out.append(flat[(flat.amax(1) - flat.amin(1)).argmax()] / 255)
            return torch.stack(out)

    split = Split.make("train", 60, 0, size=32)
    probe = linear_probe(ColourOnly(), split.singles[:40], split.singles[40:])
    assert probe["colour"].value >= 0.9
    assert probe["shape"].value < 0.6
