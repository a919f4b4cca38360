"""Region methods: how one region of an image becomes one CLIP feature, by name.

"falip" biases attention (the foveal encoder); "plain" is the whole image for every region (no
prompt, i.e. chance for ranking); the Table 5 ablations ("feature-mask", "replace-q",
"replace-kv") change the attention operation; every pixel-editing prompt of `visual_prompts`
edits a copy of the image per region; "<prompt>+falip" edits the image and then applies FALIP to
the same region. A method may also rewrite the text (CPT names the shade's colour). A new method
is a function plus an entry in `METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..ablations import OPERATIONS
from ..errors import FalipError
from ..preprocess import open_image
from ..regions import Region, region_box
from .visual_prompts import VISUAL_PROMPTS, cpt_text

TEMPLATE = "a photo of {}"
FALIP_OPTIONS = ("alpha", "sigma", "layers", "form")
Features = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Method:
    """`features(model, image, regions, **falip_options) -> (R, D)`; `text` rewrites each query."""

    name: str
    features: Features
    text: Callable[[str], str] = str
    takes_falip_options: bool = False


def _plain(model, image: Image.Image, regions: Sequence[Region], **_) -> torch.Tensor:
    return model.encode_image(image).expand(len(regions), -1)


def _falip(operation: str = "bias") -> Features:
    def features(model, image, regions, **options) -> torch.Tensor:
        return model.encode_regions(image, list(regions), operation=operation, **options)

    return features


def _prompted(prompt_name: str, then_falip: bool = False) -> Features:
    prompt = VISUAL_PROMPTS[prompt_name]

    def features(model, image, regions, **options) -> torch.Tensor:
        edited = [prompt(image, region_box(r)) for r in regions]
        if not then_falip:
            return model.encode_image(edited)
        return torch.cat([model.encode_regions(e, [r], **options) for e, r in zip(edited, regions)])

    return features


def _text_of(prompt_name: str) -> Callable[[str], str]:
    return cpt_text if prompt_name == "cpt" else str


METHODS: dict[str, Method] = {
    "plain": Method("plain", _plain),
    "falip": Method("falip", _falip(), takes_falip_options=True),
    **{op: Method(op, _falip(op), takes_falip_options=True) for op in OPERATIONS},
    **{p: Method(p, _prompted(p), _text_of(p)) for p in VISUAL_PROMPTS},
    **{f"{p}+falip": Method(f"{p}+falip", _prompted(p, True), _text_of(p), True) for p in VISUAL_PROMPTS if p != "crop"},
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise FalipError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


@torch.no_grad()
def region_features(model, image, regions: Sequence[Region], method: str = "falip", **falip_options) -> torch.Tensor:
    """Unit features (R, D) of one image's regions (`xywh` boxes or binary masks) under a method.
    `falip_options` (alpha, sigma, layers, form) go to the methods that use FALIP."""
    spec = get_method(method)
    unknown = set(falip_options) - set(FALIP_OPTIONS)
    if unknown:
        raise FalipError(f"unknown FALIP option(s) {', '.join(sorted(unknown))}; known: {', '.join(FALIP_OPTIONS)}")
    options = falip_options if spec.takes_falip_options else {}
    feats = spec.features(model, open_image(image), list(regions), **options)
    return F.normalize(feats.float(), dim=-1)


@torch.no_grad()
def text_features(model, texts: Sequence[str], template: str = TEMPLATE, method: str = "plain") -> torch.Tensor:
    """Unit text features (T, D): each text rewritten by the method (CPT), then put in the template."""
    rewrite = get_method(method).text
    return F.normalize(model.encode_text([template.format(rewrite(t)) for t in texts]).float(), dim=-1)
