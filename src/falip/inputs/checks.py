"""Checks of user input, one function per kind, each a one-line `FalipError` naming the argument.

The API entry points, the run configuration and the command line all call these, so a value is
judged the same way wherever it comes in.
"""

from __future__ import annotations

import math
import numbers
import string
from collections.abc import Sequence

from ..errors import FalipError, spelled


def finite(name: str, value) -> float:
    """A finite real number (not a bool), as a float; FalipError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FalipError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise FalipError(f"{name} must be finite, got {value}")
    return value


def positive(name: str, value) -> float:
    """A finite number above 0, as a float; FalipError naming `name` otherwise."""
    value = finite(name, value)
    if value <= 0:
        raise FalipError(f"{name} must be positive, got {value:g}")
    return value


ALPHA_LIMIT = 1e4
"""Largest |alpha|. The bias is added to attention logits: past a few tens the softmax already puts all of
the [CLS] query's weight on the region, and near 3.4e38 (float32) or 6.5e4 (float16) the logits overflow
into NaN scores."""
SIGMA_RANGE = (1e-6, 1e6)
"""Smallest and largest sigma, in token units. At 1e-6 the Gaussian is already a point on the centre
token; below about 1e-19 float32's sigma**2 underflows to 0 and the centre value is 0/0 (NaN). At 1e6 it
is already flat over any token grid; far above, float32's sigma**2 overflows."""


def falip_strength(alpha, sigma) -> tuple[float, float]:
    """FALIP's amplitude and width (Eq. 1-2), checked.

    Args:
        alpha: a finite number with |alpha| <= `ALPHA_LIMIT`.
        sigma: a number within `SIGMA_RANGE` (token units).
    Returns:
        (alpha, sigma) as floats.
    Raises:
        FalipError: a non-number, a non-finite value, or one outside those bounds (which would give NaN
            scores, not a stronger or weaker focus).
    """
    alpha, sigma = finite("alpha", alpha), positive("sigma", sigma)
    if abs(alpha) > ALPHA_LIMIT:
        raise FalipError(
            f"alpha must be within +-{ALPHA_LIMIT:g} (past a few tens the focus is already total), "
            f"got {alpha:g}"
        )
    low, high = SIGMA_RANGE
    if not low <= sigma <= high:
        raise FalipError(f"sigma must be within {low:g} and {high:g} token units, got {sigma:g}")
    return alpha, sigma


def count(name: str, value, minimum: int = 1) -> int:
    """A whole number (not a bool) of at least `minimum`, as an int; FalipError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise FalipError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise FalipError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def optional_count(name: str, value, minimum: int = 1) -> int | None:
    """None, or a whole number of at least `minimum` (`count`'s checks and errors)."""
    return None if value is None else count(name, value, minimum)


def fraction(name: str, value, *, low: float = 0.0, high: float = 1.0) -> float:
    """A finite number in [low, high), as a float; FalipError naming `name` otherwise."""
    value = finite(name, value)
    if not low <= value < high:
        raise FalipError(f"{name} must be in [{low:g}, {high:g}), got {value:g}")
    return value


def layer_list(layers) -> list[int] | None:
    """Layers as None (the default set), one int, or a sequence of ints -> None or a list of ints
    (0-based, negative from the end; range-checked by the model). FalipError for anything else."""
    if layers is None:
        return None
    if isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
        return [int(layers)]
    if (
        isinstance(layers, (str, bytes))
        or not isinstance(layers, Sequence)
        and not hasattr(layers, "__iter__")
    ):
        raise FalipError(f"layers must be an int or a list of ints, got {layers!r}")
    out = list(layers)
    bad = [v for v in out if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
    if bad:
        raise FalipError(f"layers must be whole numbers (0-based), got {bad[0]!r} in {out!r}")
    return [int(v) for v in out]


def template(text: str, what: str = "template") -> str:
    """A prompt template with exactly one empty `{}` field and nothing else to fill, returned unchanged.
    FalipError (calling it `what`) for a non-string, a malformed format string, or other fields."""
    if not isinstance(text, str):
        raise FalipError(f"the {what} must be text with one {{}}, got {text!r}")
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(text)
            if name is not None
        ]
    except ValueError as exc:
        raise FalipError(f"the {what} {text!r} is not a valid template: {exc}") from None
    if len(fields) != 1 or fields[0] != ("", "", None):
        raise FalipError(
            f"the {what} needs exactly one {{}} (and no other {{...}} field) for the text, got {text!r}"
        )
    return text


def _device_cpu() -> str:
    """The CPU choice as the user spells it: `--device cpu` on the command line, `device='cpu'` in Python."""
    return "--device cpu" if spelled("device") == "--device" else "device='cpu'"


def device(value):
    """A torch device the machine has: "cpu", "cuda", "cuda:N" or "mps" (a `torch.device` is accepted).

    FalipError for a name torch does not know, a CUDA or MPS device this machine lacks, or another
    device type."""
    import torch

    try:
        chosen = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise FalipError(
            f"unknown device {value!r}: use 'cpu', 'cuda' or 'cuda:N' ({str(exc).splitlines()[0]})"
        ) from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise FalipError(f"CUDA was asked for, but PyTorch sees no CUDA device here; use {_device_cpu()}")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise FalipError(f"there is no {chosen}: PyTorch sees {torch.cuda.device_count()} CUDA device(s)")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise FalipError(f"MPS was asked for, but PyTorch sees no MPS device here; use {_device_cpu()}")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise FalipError(f"unsupported device {value!r}: use 'cpu', 'cuda' or 'cuda:N'")
    return chosen
