"""Region methods: how one region of an image becomes one CLIP feature, by name, in one registry.

- "falip": the foveal bias on the [CLS] row (the fast engine);
- "plain": the whole image for every region (no prompt, i.e. chance for ranking);
- Table 5's attention operations: "feature-mask" (Fig. 7a), "replace-v" and "replace-qk" (the
  two-stream variants of Fig. 7b and 7c, with the `red_circle` image as the prompted stream), and
  two of ours that are not the paper's, "ours-mean-q" and "ours-hard-kv" (`falip.engine.ablations`);
- "pasta": PASTA's attention steering on the region (Table 1, `falip.engine.pasta`);
- "<prompt>+unleash": the prompt's heads unleashed (Sec. 4.4, Table 4, `falip.engine.unleash`);
- every pixel prompt of `visual_prompts` (edits a copy of the image per region), and
  "<prompt>+falip": the image edited, then FALIP on the same region.

A method is a function `features(model, image, regions, settings, **options) -> (R, D)` registered with
`@register_method(name)`: `image` is an RGB PIL image (through the input door), `regions` the checked
`Box`/`Mask` values (`falip.inputs.regions.check_regions`), `settings` the run's `FalipSettings`
(alpha, sigma, layers, form, box rule, Gaussian), and
`options` only the method's own run options that it names (`options=("pasta_scale", ...)`). A method may
also rewrite the text (`text=`, CPT names the shade's colour). A new method is one file with one
registration, imported where it should be available (see `tests/test_methods_registry.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..engine.ablations import OPERATIONS
from ..engine.two_stream import TWO_STREAM_MODES
from ..errors import FalipError
from ..inputs.images import open_image
from ..inputs.masks import parse_heads
from ..inputs.regions import Region, check_regions, region_box
from ..inputs.settings import FalipSettings
from ..inputs.texts import check_texts
from .visual_prompts import VISUAL_PROMPTS, cpt_text

TEMPLATE = "a photo of {}"
SETTINGS_OPTIONS = ("alpha", "sigma", "layers", "form")  # run options that make the `FalipSettings`
METHOD_OPTIONS = SETTINGS_OPTIONS + ("pasta_scale", "pasta_heads", "unleash_layers", "unleash_heads")
TWO_STREAM_PROMPT = "red_circle"
Features = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A registered region method: `features(model, image, regions, settings, **options) -> (R, D)`;
    `text` rewrites each query; `options` names the method's own run options (of `METHOD_OPTIONS`,
    beyond the settings) that it takes."""

    name: str
    features: Features
    text: Callable[[str], str] = str
    options: tuple[str, ...] = ()
    whole_text: bool = False  # the rewritten text is the whole query: no template around it (CPT)


METHODS: dict[str, Method] = {}


def register_method(
    name: str, *, text: Callable[[str], str] = str, options: Sequence[str] = (), whole_text: bool = False
) -> Callable[[Features], Features]:
    """Decorator: register `features(model, image, regions, settings, **options)` as the method `name`.

    Args:
        name: the method's name on the command line, the web page and in results (unique).
        text: rewrites each query text for this method (e.g. CPT's colour sentence).
        options: the method's own run options it takes, among `METHOD_OPTIONS` minus the settings.
        whole_text: `text`'s result is the whole query, not put in the run's template (CPT as ReCLIP
            words it: "{expression} is in red color.", no "a photo of").
    Raises:
        ValueError: the name is taken, or an option is not a known run option (a programming error).
    """
    unknown = set(options) - set(METHOD_OPTIONS[len(SETTINGS_OPTIONS) :])
    if unknown:
        raise ValueError(f"method {name!r}: unknown option(s) {', '.join(sorted(unknown))}")

    def register(features: Features) -> Features:
        if name in METHODS:
            raise ValueError(f"a method named {name!r} is registered already")
        METHODS[name] = Method(name, features, text, tuple(options), whole_text)
        return features

    return register


@register_method("plain")
def _plain(model, image: Image.Image, regions: Sequence[Region], settings: FalipSettings) -> torch.Tensor:
    return model.encode_image(image).expand(len(regions), -1)


@register_method("falip")
def _falip(model, image, regions, settings) -> torch.Tensor:
    return model.encode_regions(image, list(regions), settings=settings)


def _ablation(operation: str) -> Features:
    def features(model, image, regions, settings) -> torch.Tensor:
        return model.encode_regions(image, list(regions), operation=operation, settings=settings)

    return features


def _two_stream(mode: str) -> Features:
    prompt = VISUAL_PROMPTS[TWO_STREAM_PROMPT]

    def features(model, image, regions, settings) -> torch.Tensor:
        edited = [prompt(image, region_box(r), box_format="xyxy") for r in regions]
        return model.encode_two_stream(
            image,
            edited,
            list(regions),
            mode,
            alpha=settings.alpha,
            sigma=settings.sigma,
            layers=settings.layers,
        )

    return features


def _heads(heads):
    """Heads as (layer, head) pairs, from "layer:head,..." text too."""
    if not isinstance(heads, str):
        return heads
    try:
        return parse_heads(heads)
    except ValueError as exc:
        raise FalipError(str(exc)) from None


@register_method("pasta", options=("pasta_scale", "pasta_heads"))
def _pasta(model, image, regions, settings, pasta_scale: float = 0.01, pasta_heads=None) -> torch.Tensor:
    return model.encode_pasta(
        image, list(regions), scale=pasta_scale, layers=settings.layers, heads=_heads(pasta_heads)
    )


def _unleashed(prompt_name: str) -> Features:
    prompt = VISUAL_PROMPTS[prompt_name]

    def features(model, image, regions, settings, unleash_layers=None, unleash_heads=None) -> torch.Tensor:
        edited = [prompt(image, region_box(r), box_format="xyxy") for r in regions]
        return model.encode_unleashed(image, edited, layers=unleash_layers, heads=_heads(unleash_heads))

    return features


def _prompted(prompt_name: str, then_falip: bool = False) -> Features:
    prompt = VISUAL_PROMPTS[prompt_name]

    def features(model, image, regions, settings) -> torch.Tensor:
        edited = [prompt(image, region_box(r), box_format="xyxy") for r in regions]
        if not then_falip:
            return model.encode_image(edited)
        return torch.cat([model.encode_regions(e, [r], settings=settings) for e, r in zip(edited, regions)])

    return features


def _text_of(prompt_name: str) -> Callable[[str], str]:
    return cpt_text if prompt_name == "cpt" else str


for _operation in OPERATIONS:
    register_method(_operation)(_ablation(_operation))
for _mode in TWO_STREAM_MODES:
    register_method(_mode)(_two_stream(_mode))
for _prompt in VISUAL_PROMPTS:
    register_method(_prompt, text=_text_of(_prompt), whole_text=_prompt == "cpt")(_prompted(_prompt))
_EDITABLE = [p for p in VISUAL_PROMPTS if p != "crop" and not p.startswith("red_circle_e")]
for _prompt in _EDITABLE:
    register_method(f"{_prompt}+falip", text=_text_of(_prompt), whole_text=_prompt == "cpt")(
        _prompted(_prompt, True)
    )
for _prompt in _EDITABLE:
    register_method(
        f"{_prompt}+unleash",
        text=_text_of(_prompt),
        options=("unleash_layers", "unleash_heads"),
        whole_text=_prompt == "cpt",
    )(_unleashed(_prompt))

PLUGIN_GROUP = "falip.methods"
_plugins_loaded = False


def load_plugins() -> None:
    """Import the modules that installed packages declare under the `falip.methods` entry-point group
    (`[project.entry-points."falip.methods"] name = "package.module"`), once: each registers its methods
    with `register_method` when imported. Raises FalipError naming a plugin that fails to import."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as exc:  # a broken plugin is named, not a traceback
            raise FalipError(
                f"method plugin {entry.name!r} ({entry.value}) failed to import: {exc}"
            ) from None


def get_method(name: str) -> Method:
    """The registered method `name` (plugins loaded first). Raises FalipError naming the known methods."""
    load_plugins()
    if name not in METHODS:
        raise FalipError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    """Every registered method's name, plugins included, in registration order."""
    load_plugins()
    return list(METHODS)


@torch.no_grad()
def region_features(
    model,
    image,
    regions: Sequence[Region],
    method: str = "falip",
    *,
    settings: FalipSettings | None = None,
    **options,
) -> torch.Tensor:
    """Unit features (R, D) of one image's regions under a method.

    Args:
        model: a `FalipModel`.
        image: a path, bytes, PIL image or uint8 array (through `falip.inputs.images.open_image`).
        regions: `xywh` boxes in image pixels, or binary masks shaped like the image.
        method: a registered method name (`METHODS`).
        settings: FALIP's settings (default: the model's, the paper's); `alpha`, `sigma`, `layers`, `form`
            given as options go on top of them.
        options: those settings, and the methods' own options (pasta_scale, pasta_heads, unleash_layers,
            unleash_heads), each passed only to the methods that take it.
    Returns:
        (R, D) L2-normalised float32 features.
    Raises:
        FalipError: an unknown method or option, a bad setting, image or region.
    """
    spec = get_method(method)
    unknown = set(options) - set(METHOD_OPTIONS)
    if unknown:
        raise FalipError(
            f"unknown method option(s) {', '.join(sorted(unknown))}; known: {', '.join(METHOD_OPTIONS)}"
        )
    run_settings = model.settings_for(settings, **{k: options.get(k) for k in SETTINGS_OPTIONS})
    own = {k: v for k, v in options.items() if k in spec.options}
    img = open_image(image)
    feats = spec.features(model, img, check_regions(regions, img.size), run_settings, **own)
    return F.normalize(feats.float(), dim=-1)


@torch.no_grad()
def text_features(
    model, texts: Sequence[str], template: str = TEMPLATE, method: str = "plain"
) -> torch.Tensor:
    """Unit text features (T, D): each text rewritten by the method, then put in the template, unless the
    method's rewrite is the whole query (CPT: "{expression} is in red color.", ReCLIP's
    `ClipExecutor.preprocess_text` for its "shade" representation, with no "a photo of")."""
    spec = get_method(method)
    texts = check_texts(texts)  # at the door, before a template could hide an empty one
    queries = [spec.text(t) if spec.whole_text else template.format(spec.text(t)) for t in texts]
    return F.normalize(model.encode_text(queries).float(), dim=-1)
