"""The authors' own FALIP code, run on a tiny CLIP (`../shared/reference/authors-falip`), reproduced
within the tolerances its README states."""

import numpy as np
import pytest
from PIL import Image

import falip


@pytest.fixture(scope="module")
def ref_model(reference):
    d = reference["dir"]
    return falip.load(d / "weights.safetensors", tokenizer=str(d / "bpe_simple_vocab_16e6.txt.gz"))


@pytest.fixture(scope="module")
def ref_images(reference):
    return [Image.open(reference["dir"] / im["file"]).convert("RGB") for im in reference["meta"]["images"]]


def rel(a, b):
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def test_architecture_is_inferred_from_the_tensors(ref_model):
    v, t = ref_model.backbone.cfg.vision, ref_model.backbone.cfg.text
    assert (v.width, v.layers, v.heads, v.patch_size, v.image_size, v.output_dim) == (128, 12, 2, 16, 224, 64)
    assert (t.width, t.layers, t.heads, t.context_length) == (64, 2, 1, 77)
    assert ref_model.default_layers == [8, 9, 10, 11]


def test_mask_rows_match_the_authors(reference, ref_model, ref_images):
    for i, box in enumerate(reference["boxes_xywh"]):
        alpha = reference["alpha"][i]
        image = ref_images[reference["image_index"][i]]
        row = ref_model.region_rows(image.size, [box], alpha=alpha)[0].numpy()
        expected = reference["mask_rows"][i]
        assert np.array_equal(row != 0, expected != 0), f"record {i}: different tokens"
        assert np.abs(row - expected).max() <= 0.05 * alpha, f"record {i}"


def test_paper_exact_gaussian_also_stays_within_the_stated_mask_tolerance(reference, ref_images):
    exact = falip.load(reference["dir"] / "weights.safetensors", gaussian="exact")
    for i in range(0, len(reference["boxes_xywh"]), 7):
        alpha = reference["alpha"][i]
        image = ref_images[reference["image_index"][i]]
        row = exact.region_rows(image.size, [reference["boxes_xywh"][i]], alpha=alpha)[0].numpy()
        assert np.abs(row - reference["mask_rows"][i]).max() <= 0.05 * alpha


def test_global_features_match(reference, ref_model, ref_images):
    assert rel(ref_model.encode_image(ref_images).numpy(), reference["global_features"]).max() <= 1e-5


def test_alpha_zero_is_plain_clip(reference, ref_model, ref_images):
    for b, image in enumerate(ref_images):
        feats = ref_model.encode_regions(image, [[0, 0, 50, 50], [10, 10, 100, 80]], alpha=0.0).numpy()
        assert rel(feats, reference["global_features"][b]).max() <= 1e-5


def test_tokens_and_text_features_match(reference, ref_model):
    captions = reference["meta"]["captions"]
    assert np.array_equal(ref_model.tokenize(captions).numpy(), reference["token_ids"])
    assert rel(ref_model.encode_text(captions).numpy(), reference["text_features"]).max() <= 1e-5
    assert ref_model.backbone.logit_scale.exp().item() == pytest.approx(float(reference["logit_scale"]), rel=1e-6)


def test_box_features_match(reference, ref_model, ref_images):
    for b, image in enumerate(ref_images):
        sel = np.nonzero(reference["image_index"] == b)[0]
        for alpha in np.unique(reference["alpha"][sel]):
            recs = sel[reference["alpha"][sel] == alpha]
            feats = ref_model.encode_regions(image, reference["boxes_xywh"][recs].tolist(), alpha=float(alpha)).numpy()
            expected = reference["box_features"][recs]
            effect = np.linalg.norm(expected - reference["global_features"][b], axis=-1)
            assert np.all(np.linalg.norm(feats - expected, axis=-1) <= 0.1 * effect), f"image {b} alpha {alpha}"
            assert rel(feats, expected).max() <= 1e-3
