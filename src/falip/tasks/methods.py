"""Region methods: how one region of an image becomes one CLIP feature, by name.

- "falip": the foveal bias on the [CLS] row (the fast engine);
- "plain": the whole image for every region (no prompt, i.e. chance for ranking);
- Table 5's attention operations: "feature-mask" (Fig. 7a), "replace-v" and "replace-qk" (the
  two-stream variants of Fig. 7b and 7c, with the `red_circle` image as the prompted stream), and
  two of ours that are not the paper's, "ours-mean-q" and "ours-hard-kv" (`falip.ablations`);
- "pasta": PASTA's attention steering on the region (Table 1, `falip.pasta`);
- "<prompt>+unleash": the prompt's heads unleashed (Sec. 4.4, Table 4, `falip.unleash`);
- every pixel prompt of `visual_prompts` (edits a copy of the image per region), and
  "<prompt>+falip": the image edited, then FALIP on the same region.
A method may also rewrite the text (CPT names the shade's colour). Each method takes only the run
options it uses (`Method.options`). A new method is a function plus an entry in `METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..ablations import OPERATIONS
from ..errors import FalipError
from ..masks import parse_heads
from ..preprocess import open_image
from ..regions import Region, region_box
from ..two_stream import TWO_STREAM_MODES
from .visual_prompts import VISUAL_PROMPTS, cpt_text

TEMPLATE = "a photo of {}"
FALIP_OPTIONS = ("alpha", "sigma", "layers", "form")
PASTA_OPTIONS = ("layers", "pasta_scale", "pasta_heads")
UNLEASH_OPTIONS = ("unleash_layers", "unleash_heads")
METHOD_OPTIONS = FALIP_OPTIONS + PASTA_OPTIONS[1:] + UNLEASH_OPTIONS
TWO_STREAM_PROMPT = "red_circle"
Features = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Method:
    """`features(model, image, regions, **options) -> (R, D)`; `text` rewrites each query;
    `options` names the run options (of `METHOD_OPTIONS`) the method takes."""

    name: str
    features: Features
    text: Callable[[str], str] = str
    options: tuple[str, ...] = ()


def _plain(model, image: Image.Image, regions: Sequence[Region], **_) -> torch.Tensor:
    return model.encode_image(image).expand(len(regions), -1)


def _falip(operation: str = "bias") -> Features:
    def features(model, image, regions, **options) -> torch.Tensor:
        return model.encode_regions(image, list(regions), operation=operation, **options)

    return features


def _two_stream(mode: str) -> Features:
    prompt = VISUAL_PROMPTS[TWO_STREAM_PROMPT]

    def features(model, image, regions, **options) -> torch.Tensor:
        edited = [prompt(image, region_box(r)) for r in regions]
        return model.encode_two_stream(image, edited, list(regions), mode, **options)

    return features


def _heads(heads):
    """Heads as (layer, head) pairs, from "layer:head,..." text too."""
    if not isinstance(heads, str):
        return heads
    try:
        return parse_heads(heads)
    except ValueError as exc:
        raise FalipError(str(exc)) from None


def _pasta(model, image, regions, layers=None, pasta_scale: float = 0.01, pasta_heads=None) -> torch.Tensor:
    return model.encode_pasta(image, list(regions), scale=pasta_scale, layers=layers, heads=_heads(pasta_heads))


def _unleashed(prompt_name: str) -> Features:
    prompt = VISUAL_PROMPTS[prompt_name]

    def features(model, image, regions, unleash_layers=None, unleash_heads=None) -> torch.Tensor:
        edited = [prompt(image, region_box(r)) for r in regions]
        return model.encode_unleashed(image, edited, layers=unleash_layers, heads=_heads(unleash_heads))

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
    "falip": Method("falip", _falip(), options=FALIP_OPTIONS),
    **{op: Method(op, _falip(op), options=FALIP_OPTIONS) for op in OPERATIONS},
    "replace-v": Method("replace-v", _two_stream("replace-v"), options=("layers",)),
    "replace-qk": Method("replace-qk", _two_stream("replace-qk"), options=("alpha", "sigma", "layers")),
    "pasta": Method("pasta", _pasta, options=PASTA_OPTIONS),
    **{p: Method(p, _prompted(p), _text_of(p)) for p in VISUAL_PROMPTS},
    **{f"{p}+falip": Method(f"{p}+falip", _prompted(p, True), _text_of(p), FALIP_OPTIONS) for p in VISUAL_PROMPTS
       if p != "crop" and not p.startswith("red_circle_e")},
    **{f"{p}+unleash": Method(f"{p}+unleash", _unleashed(p), _text_of(p), UNLEASH_OPTIONS) for p in VISUAL_PROMPTS
       if p != "crop" and not p.startswith("red_circle_e")},
}
assert set(TWO_STREAM_MODES) <= set(METHODS)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise FalipError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


@torch.no_grad()
def region_features(model, image, regions: Sequence[Region], method: str = "falip", **options) -> torch.Tensor:
    """Unit features (R, D) of one image's regions (`xywh` boxes or binary masks) under a method.
    `options` (alpha, sigma, layers, form, pasta_scale, pasta_heads, unleash_layers, unleash_heads) go
    to the methods that use them."""
    spec = get_method(method)
    unknown = set(options) - set(METHOD_OPTIONS)
    if unknown:
        raise FalipError(f"unknown method option(s) {', '.join(sorted(unknown))}; known: {', '.join(METHOD_OPTIONS)}")
    used = {k: v for k, v in options.items() if k in spec.options}
    feats = spec.features(model, open_image(image), list(regions), **used)
    return F.normalize(feats.float(), dim=-1)


@torch.no_grad()
def text_features(model, texts: Sequence[str], template: str = TEMPLATE, method: str = "plain") -> torch.Tensor:
    """Unit text features (T, D): each text rewritten by the method (CPT), then put in the template."""
    rewrite = get_method(method).text
    return F.normalize(model.encode_text([template.format(rewrite(t)) for t in texts]).float(), dim=-1)
