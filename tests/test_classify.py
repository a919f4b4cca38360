"""Classification helpers: prompt ensembling, template checks, top-k."""

import pytest
import torch
import torch.nn.functional as F

import falip
from conftest import close
from falip.errors import FalipError
from falip.tasks.classify import TEMPLATE_SETS, class_features, resolve_templates, top_k


def test_class_features_average_unit_template_features(hf_dir):
    model = falip.load(hf_dir)
    feats = class_features(model, ["cat", "dog"], ["a {}.", "the {} here"])
    by_hand = F.normalize(
        F.normalize(model.encode_text(["a cat.", "the cat here"]).float(), dim=-1).mean(0), dim=0
    )
    assert close(feats[0], by_hand, rel=1e-5)
    assert torch.allclose(feats.norm(dim=1), torch.ones(2))
    assert class_features(model, ["cat"], "ensemble7").shape == (1, 16)


def test_templates_and_top_k():
    assert resolve_templates("bird") == TEMPLATE_SETS["bird"]
    assert resolve_templates("a {} photo") == ("a {} photo",)
    with pytest.raises(FalipError, match="exactly one"):
        resolve_templates(["no slot"])
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    hits = top_k(scores, [2, 2], ks=(1, 2, 5))
    assert (
        hits[1].tolist() == [False, False]
        and hits[2].tolist() == [True, False]
        and hits[5].tolist() == [True, True]
    )
