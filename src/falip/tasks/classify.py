"""Region-prompted classification: name the one prompted region of an image among class names.

Class text features follow CLIP's prompt ensembling: each class name goes into every template of a
set, the unit features are averaged and normalised again. Scores are cosines; top-k accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FalipError
from ..inputs import checks
from ..inputs.texts import check_texts
from .methods import get_method

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.",),
    "bird": ("a photo of a {}, a type of bird.",),
    "dog": ("a photo of a {}, a type of dog.",),
    # the seven templates CLIP's authors found best for ImageNet ensembling
    "ensemble7": (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ),
}


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A template set's name (a key of `TEMPLATE_SETS`), or templates given directly (one string or a
    sequence, each with one `{}`) -> a tuple of templates. FalipError for none, or a malformed one."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        templates = (templates,)
    out = tuple(templates)
    if not out:
        raise FalipError(
            f"no template given: give templates with one {{}} each, or name a set: {', '.join(TEMPLATE_SETS)}"
        )
    for text in out:
        checks.template(text, "class template")
    return out


@torch.no_grad()
def class_features(
    model, names: Sequence[str], templates: str | Sequence[str] = "photo", method: str = "plain"
) -> torch.Tensor:
    """Unit (C, D) class features: the mean over templates of unit text features, renormalised.
    The method may rewrite the class text (CPT names its shade's colour); a rewrite that is the whole
    query (CPT's "{} is in red color.", as ReCLIP words it) is used as it is, in place of each template."""
    spec = get_method(method)
    chosen = resolve_templates(templates)
    texts = [
        spec.text(name) if spec.whole_text else t.format(spec.text(name))
        for name in check_texts(names)
        for t in chosen
    ]
    feats = F.normalize(model.encode_text(texts).float(), dim=-1).unflatten(0, (len(names), len(chosen)))
    return F.normalize(feats.mean(dim=1), dim=-1)


def top_k(scores: torch.Tensor, labels: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict[int, np.ndarray]:
    """For each k, whether each row's label is among its k highest scores (k capped at C)."""
    labels_t = torch.as_tensor(labels).reshape(-1, 1)
    order = scores.argsort(dim=1, descending=True)
    return {k: (order[:, : min(k, scores.shape[1])] == labels_t).any(dim=1).numpy() for k in ks}
