"""`FalipSettings`: FALIP's knobs in one frozen value, the paper's defaults written once, checked when built.

Every entry point (the API's keyword arguments, the CLI's options, the web page's fields, `RunConfig`) builds
one of these; what lies behind the door (bias rows, the encoder) takes it as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import FalipError
from . import checks
from .masks import BOX_RULES, GAUSSIAN_NUMERICS, MASK_FORMS, default_layers, resolve_layers


def _span(layers) -> str:
    """Layer indices as text: a contiguous run as "8-11", else "0,2,5"."""
    values = sorted(int(v) for v in layers)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


def _choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise FalipError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class FalipSettings:
    """How FALIP biases the attention (Sec. 3.2, Eq. 1-4), with the paper's defaults.

    Attributes:
        alpha: amplitude of the min-max normalised Gaussian (Eq. 2); the paper's 0.2 (Table 10).
        sigma: the Gaussian's width in token units (Eq. 1); the paper's 100 (Table 11).
        layers: 0-based masked layers, negative ones from the end; None is the last third (layers 8-11 of
            a 12-layer ViT-B, the paper's "layers 9-12", Table 12).
        form: where the bias row goes (Table 6): "cls" the [CLS] query row (form a, the paper's), "all"
            every query row (form b), "diag" the diagonal (form c).
        box_rule: "authors" (their ceil rule for a box's token rectangle) or "overlap" (every token the box
            overlaps); see `falip.inputs.masks.box_to_token_rect`.
        gaussian: "authors" (their float32 arithmetic) or "exact" (float64, peak = alpha).
    Raises:
        FalipError: a non-finite alpha, a sigma that is not positive and finite, layers that are not
            integers, or an unknown form, box rule or Gaussian.
    """

    alpha: float = 0.2
    sigma: float = 100.0
    layers: tuple[int, ...] | None = None
    form: str = "cls"
    box_rule: str = "authors"
    gaussian: str = "authors"

    def __post_init__(self) -> None:
        """Check and normalise every field once: alpha and sigma to floats, layers to a tuple of ints.

        Raises:
            FalipError: as listed in the class's docstring (`checks.falip_strength`,
                `checks.layer_list`, the choices in `falip.inputs.masks`).
        """
        alpha, sigma = checks.falip_strength(self.alpha, self.sigma)
        layers = checks.layer_list(self.layers)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "layers", None if layers is None else tuple(layers))
        _choice("mask form", self.form, MASK_FORMS)
        _choice("box rule", self.box_rule, BOX_RULES)
        _choice("gaussian numerics", self.gaussian, GAUSSIAN_NUMERICS)

    def describe(self, depth: int | None = None) -> str:
        """One line naming the setting, as every `falip` command prints it, e.g.
        ``alpha 0.2, sigma 100, layers 8-11 (0-based; the last third), form cls: the paper's setting``.

        Args:
            depth: the model's number of layers, to name the default layers (None: "the last third").

        Raises:
            FalipError: a layer the `depth`-layer model does not have (`resolve_layers`' message).
        """
        if self.layers is None:
            layers = (
                "the last third"
                if depth is None
                else f"{_span(default_layers(depth))} (0-based; the last third)"
            )
        else:
            shown = self.layers
            if depth is not None:  # the layers the model has, or the one-line error, before anything is said
                try:
                    shown = resolve_layers(self.layers, depth)
                except ValueError as exc:
                    raise FalipError(str(exc)) from None
            layers = f"{_span(shown)} (0-based)"
        text = f"alpha {self.alpha:g}, sigma {self.sigma:g}, layers {layers}, form {self.form}"
        for name in ("box_rule", "gaussian"):
            if getattr(self, name) != getattr(PAPER, name):
                text += f", {name.replace('_', ' ')} {getattr(self, name)}"
        paper = (self.alpha, self.sigma, self.layers, self.form) == (
            PAPER.alpha,
            PAPER.sigma,
            None,
            PAPER.form,
        )
        return text + (": the paper's setting" if paper else "")

    def with_(self, **changes) -> FalipSettings:
        """A copy with the given fields changed; a value of None keeps this one's (so keyword arguments
        left at None fall back to these settings). Layers cannot be reset to None (the default set)
        this way: build a new `FalipSettings` for that.

        Raises:
            FalipError: a changed value that `__post_init__` refuses.
            TypeError: a name that is not a field (from `dataclasses.replace`).
        """
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self


PAPER = FalipSettings()
"""The paper's setting: alpha 0.2, sigma 100, the last third of the layers, form a."""
