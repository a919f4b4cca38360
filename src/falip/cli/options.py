"""Option types shared by the `falip` commands, as `click.ParamType`s (the CLI's door for numbers and layers).

A bad value is click's usage error naming the option (`--box needs 4 numbers, got '1,2,3'`); the engine
then checks ranges (finite alpha, positive sigma, layers inside the model) with `falip.inputs.checks`.
"""

from __future__ import annotations

import math
import re

import click


def numbers(text: str, what: str, count: int | None = None) -> list[float]:
    """Comma-separated finite numbers, e.g. ``"10,20,30,40"``; one trailing comma is allowed.

    Args:
        text: what the user typed.
        what: the option's name for the message (``"--box"``).
        count: the number of values required, or None for any.
    Raises:
        click.BadParameter: not numbers, not finite, or not `count` of them.
    """
    fields = text.replace(" ", "").split(",")
    if fields and fields[-1] == "":
        fields.pop()  # one trailing comma is harmless
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"{what} must be finite numbers, got {text!r}")
    if count is not None and len(values) != count:
        raise click.BadParameter(f"{what} needs {count} numbers, got {text!r}")
    return values


def given_options(**options) -> dict:
    """The data-set options the user gave, those left at None dropped (click hands paths over as strings,
    so they save as JSON in a run's config)."""
    return {k: v for k, v in options.items() if v is not None}


def _name(param: click.Parameter | None, fallback: str) -> str:
    return param.opts[0] if param is not None and param.opts else fallback


class Numbers(click.ParamType):
    """A comma-separated list of finite numbers (`count` of them when given): ``--box 10,20,30,40``."""

    name = "numbers"

    def __init__(self, count: int | None = None) -> None:
        """`count`: how many numbers the option needs (4 for a box), or None for any number of them."""
        self.count = count

    def convert(self, value, param, ctx) -> list[float]:
        """click's hook: the typed text -> a list of floats (a list, e.g. a default, passes as it is).

        Raises:
            click.BadParameter: via `self.fail`, with `numbers`' message naming the option (exit 2).
        """
        if isinstance(value, list):
            return value
        try:
            return numbers(value, _name(param, "value"), self.count)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


class Layers(click.ParamType):
    """Comma-separated 0-based layer indices (negative ones from the end) or ranges of them, as every command
    prints its setting: ``--layers 8,9,10,11``, ``--layers 8-11``, ``--layers 0-3,11``."""

    name = "layers"

    def convert(self, value, param, ctx) -> list[int]:
        """click's hook: the typed text -> a list of ints (a list, e.g. a default, passes as it is).

        Only the syntax is checked here; whether the layers exist is the model's check
        (`falip.inputs.masks.resolve_layers`), once the model's depth is known.

        Raises:
            click.BadParameter: via `self.fail`, for a field that is not an integer (exit 2).
        """
        if isinstance(value, list):
            return value
        what = _name(param, "--layers")
        values = []
        for field in value.split(","):
            span = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", field)
            if span and int(span[1]) <= int(span[2]):
                values.extend(range(int(span[1]), int(span[2]) + 1))
                continue
            try:
                values.append(int(field))
            except ValueError:
                self.fail(
                    f"{what} takes comma-separated 0-based indices or ranges (8,9,10,11 or 8-11), "
                    f"got {value!r}",
                    param,
                    ctx,
                )
        if not values:
            self.fail(f"{what} needs at least one index", param, ctx)
        return values


BOX = Numbers(4)
NUMBERS = Numbers()
LAYERS = Layers()


TOY_NOTE = "the embedded toy CLIP (trained on generated shapes; a model organism, not OpenAI's CLIP)"


def say_model(model) -> None:
    """Print which model runs: the toy's note for the embedded toy CLIP, else its name."""
    click.echo(f"model: {TOY_NOTE if model.name == 'toy' else model.name}")


def say_setting(settings, depth: int | None = None, why: str | None = None) -> None:
    """Print the FALIP setting a command runs with (`FalipSettings.describe`), and why when it is not the
    paper's; every command that applies FALIP says it before its results."""
    click.echo(f"FALIP setting: {settings.describe(depth)}" + (f" ({why})" if why else ""))
