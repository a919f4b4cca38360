"""Referring-expression scoring: IoU, subtract, ensembles, negatives, and the methods."""

import numpy as np
import pytest
import torch

import falip
from conftest import close
from falip.errors import FalipError
from falip.tasks.methods import region_features as box_features
from falip.tasks.methods import text_features
from falip.tasks.rec import NegativeSampler, accuracy_at_iou, ensemble, iou, sample_negatives, subtract


def test_iou():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0
    assert accuracy_at_iou([[0, 0, 10, 10], [5, 0, 10, 10]], [[0, 0, 10, 10], [0, 0, 10, 10]]) == 0.5


def test_subtract_removes_each_boxs_mean_negative_score_and_can_change_the_winner():
    scores = torch.tensor([[0.30], [0.28]])  # box 0 wins on the raw score...
    negatives = torch.tensor([[0.29, 0.31], [0.20, 0.22]])  # ...but matches every caption well
    out = subtract(scores, negatives)
    assert torch.allclose(out, torch.tensor([[0.0], [0.07]]))
    assert out.argmax(0).item() == 1


def test_ensemble_sums_raw_logits_by_default_as_the_authors():
    a = torch.tensor([[10.0], [0.0]])
    b = torch.tensor([[0.0], [12.0]])
    assert torch.allclose(ensemble([a, b]), torch.tensor([[10.0], [12.0]]))
    assert ensemble([a, b]).argmax().item() == 1  # the larger logit margin wins...
    assert ensemble([a, b], "softmax-sum").argmax().item() == 1
    c = torch.tensor([[0.0], [0.1]])
    assert ensemble([a, c]).argmax().item() == 0
    assert torch.allclose(ensemble([a, c], "softmax-sum"), torch.softmax(a, 0) + torch.softmax(c, 0))
    assert torch.allclose(ensemble([a, c], "max"), torch.maximum(a, c))
    assert torch.allclose(
        ensemble([a, c], "softmax-max"), torch.maximum(torch.softmax(a, 0), torch.softmax(c, 0))
    )
    with pytest.raises(FalipError):
        ensemble([a], "mean")


def test_negatives_are_seeded_distinct_and_exclude_the_images_own():
    pool = [f"caption {i}" for i in range(20)] + ["mine", "caption 3"]
    first = sample_negatives(pool, ["mine"], 5, seed=3)
    assert first == sample_negatives(pool, ["mine"], 5, seed=3) != sample_negatives(pool, ["mine"], 5, seed=4)
    assert len(set(first)) == 5 and "mine" not in first
    sampler = NegativeSampler(pool)
    assert sampler.texts == sorted(set(pool))  # each distinct caption once: encoded once
    picked = sampler.sample(["mine"], 5, seed=3)
    assert [sampler.texts[i] for i in picked] == first
    assert len(sampler.sample(["mine"], 500, seed=0)) == 20  # all there are
    with pytest.raises(FalipError):
        sample_negatives(["mine"], ["mine"], 5, seed=0)


def test_methods_on_a_tiny_model(hf_dir):
    model = falip.load(hf_dir)
    image = np.random.default_rng(0).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    boxes = [[0, 0, 20, 20], [20, 10, 28, 30]]
    plain = box_features(model, image, boxes, "plain")
    assert torch.allclose(plain[0], plain[1])  # no region prompt: every box the same
    for method in ("falip", "crop", "blur", "red_circle"):
        feats = box_features(model, image, boxes, method, **({"alpha": 2.0} if method == "falip" else {}))
        assert feats.shape == (2, 16) and torch.allclose(feats.norm(dim=1), torch.ones(2))
        assert not close(feats[0], feats[1], rel=1e-3), method
    assert text_features(model, ["a", "b"]).shape == (2, 16)
    with pytest.raises(FalipError, match="unknown method"):
        box_features(model, image, boxes, "arrow")


def test_combinations_ablations_masks_and_cpt_text(hf_dir):
    model = falip.load(hf_dir)
    image = np.random.default_rng(0).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
    boxes = [[0, 0, 20, 20], [20, 10, 28, 30]]
    feats = {
        m: box_features(model, image, boxes, m, alpha=2.0)
        for m in ("falip", "red_circle", "red_circle+falip", "ours-mean-q", "ours-hard-kv", "feature-mask")
    }
    for a in feats:
        for b in feats:
            if a < b:
                assert not close(feats[a], feats[b], rel=1e-3), (a, b)
    mask = np.zeros((40, 48), bool)
    mask[10:30, 20:40] = True
    as_box = box_features(model, image, [[20, 10, 20, 20]], "blur")
    assert close(box_features(model, image, [mask], "blur"), as_box, rel=1e-5)  # prompts use the mask's box
    assert not close(box_features(model, image, [mask], "falip", alpha=2.0), as_box, rel=1e-3)
    # CPT's query is ReCLIP's whole sentence "{} is in red color.", with no "a photo of" around it
    cpt = text_features(model, ["the dog"], method="cpt")
    assert torch.allclose(cpt, text_features(model, ["the dog is in red color."], template="{}"))
    assert not close(cpt, text_features(model, ["the dog is in red color."]), rel=1e-3)
    assert torch.allclose(text_features(model, ["the dog"], method="cpt+falip"), cpt)
    with pytest.raises(FalipError, match="unknown method option"):
        box_features(model, image, boxes, "falip", alhpa=1.0)


def test_subtract_takes_per_text_negatives():
    scores = torch.tensor([[0.30, 0.10], [0.28, 0.20]])
    per_text = torch.tensor([[[0.29, 0.31], [0.0, 0.0]], [[0.20, 0.22], [0.4, 0.4]]])  # (R, T, N)
    assert torch.allclose(subtract(scores, per_text), torch.tensor([[0.0, 0.10], [0.07, -0.20]]))
