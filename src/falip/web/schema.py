"""The web API's requests and replies as pydantic models (so FastAPI validates them and `/docs` shows
them), and the one-line error text every refusal carries.

The models are strict: a number must be a JSON number (not "0.2"), a list a JSON list (`"texts": "red"`
is refused, not read as three texts 'r', 'e', 'd'), a box exactly four numbers (`["1234"]` is refused,
not read as [1, 2, 3, 4]), and every number finite (`NaN` and `1e999` are refused). The bounds on alpha
and sigma are the library's (`falip.inputs.checks`), so the page and the API refuse what the CLI refuses.
What a schema cannot say (a box with no width, a layer the model does not have, an image that does not
decode) is left to the library's door, whose `FalipError` is one line too.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ..inputs.checks import ALPHA_LIMIT, SIGMA_RANGE

MAX_BODY = 20 * 1024 * 1024
"""Largest request body in bytes (a data URL of a ~15 MB photo)."""
MAX_BOXES = 64
MAX_TEXTS = 16
MAX_LABELS = 200
MAX_TEXT_CHARS = 1000
COORDINATE_LIMIT = 1e6
"""Largest |x|, |y|, |w|, |h| of a box, in pixels (far beyond any image the pixel limit lets in)."""
MAX_MESSAGE = 300
"""Longest error text a reply carries; longer ones (an echoed input) are cut."""

Number = Annotated[float, Field(allow_inf_nan=False)]
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-COORDINATE_LIMIT, le=COORDINATE_LIMIT)]
Box = Annotated[
    list[Coordinate], Field(min_length=4, max_length=4, description="x, y, w, h in pixels of the image")
]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class RunRequest(BaseModel):
    """`POST /api/run`: rank `boxes` of `image` for each of `texts` with `method`."""

    model_config = ConfigDict(strict=True, extra="forbid")

    image: str = Field(
        max_length=MAX_BODY,
        description="the picture as a data URL (data:image/png;base64,... or any format Pillow decodes)",
    )
    boxes: list[Box] = Field(min_length=1, max_length=MAX_BOXES, description="boxes as [x, y, w, h]")
    texts: list[Text] = Field(
        min_length=1, max_length=MAX_TEXTS, description="what to look for; the ranking is per text"
    )
    labels: list[Text] = Field(
        default_factory=list, max_length=MAX_LABELS, description="optional labels: each box gets its best one"
    )
    method: str = Field("falip", max_length=100, description="a region method (GET /api/info lists them)")
    alpha: Number | None = Field(
        None, ge=-ALPHA_LIMIT, le=ALPHA_LIMIT, description="FALIP's amplitude; null: the model's setting"
    )
    sigma: Number | None = Field(
        None, ge=SIGMA_RANGE[0], le=SIGMA_RANGE[1], description="width in token units; null: the model's"
    )
    layers: list[int] | None = Field(
        None,
        max_length=256,
        description="0-based masked layers (negative from the end); left out: the model's setting (GET "
        "/api/info); null: the last third of the layers, the library's default",
    )


class InfoReply(BaseModel):
    """`GET /api/info`: the model, whether it is the toy one, a note about it, the region methods, and
    the default setting (alpha, sigma in token units, 0-based layers or None) with where it comes from."""

    model: str
    is_toy: bool
    note: str
    methods: list[str]
    alpha: float
    sigma: float
    layers: list[int] | None
    setting: str


class ExampleReply(BaseModel):
    """`GET /api/example`: a generated scene as a PNG data URL, its objects' boxes ([x, y, w, h] in
    pixels), the texts and labels to try, and the index of the box the expression names."""

    image: str = Field(description="a generated scene as a PNG data URL")
    boxes: list[list[float]]
    texts: list[str]
    labels: list[str]
    expected: int = Field(description="index of the box the expression names")


class RankedBox(BaseModel):
    """One box in a ranking: the box ([x, y, w, h] in pixels), its index in the request, its score for
    the text, and its best label (empty when no labels were given)."""

    box: list[float]
    index: int
    score: float
    label: str


class Ranking(BaseModel):
    """The request's boxes ranked for one text, best first."""

    text: str
    boxes: list[RankedBox]


class Setting(BaseModel):
    """The setting a run used: alpha, sigma in token units, and the 0-based masked layers."""

    alpha: float
    sigma: float
    layers: list[int]


class RunReply(BaseModel):
    """`POST /api/run`: a ranking per text, the boxes picture and the plain and FALIP [CLS] attention
    pictures (data URLs), the attention share inside the best box, the method and the setting used."""

    ranking: list[Ranking]
    boxes_picture: str
    attention_plain: str
    attention_falip: str
    attention_inside: list[float] = Field(
        description="share of [CLS] attention in the best box: plain, FALIP"
    )
    method: str
    setting: Setting


class ErrorReply(BaseModel):
    """The body of every refusal: one line saying what was wrong."""

    error: str = Field(description="what was wrong, in one line")


ERRORS = {
    status: {"model": ErrorReply, "description": text}
    for status, text in (
        (400, "a value the library refuses, or a body that is not JSON"),
        (408, "the request did not arrive in time"),
        (413, "the request is too large"),
        (422, "a field of the wrong type, out of range, missing or unknown"),
    )
}

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_FRIENDLY = {
    (
        ("boxes",),
        "too_short",
    ): "give at least one box (x, y, w, h in pixels): draw it on the image or type it",
    (("texts",), "too_short"): "give a text to look for (a referring expression)",
    (("image",), "missing"): "choose an image first (or an example scene)",
}


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """`text` as one line of at most `limit` characters, with no object addresses (`at 0x7f...`)."""
    line = _ADDRESS.sub("", " ".join(str(text).split()))
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def _place(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _shown(value: object) -> str:
    """A short picture of a refused value: scalars only, long ones cut with their length said."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"{value[:30]!r}... ({len(value)} characters)"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def validation_message(errors) -> str:
    """One line for pydantic's list of errors: the first, where it is, what was given, and how many more.

    `errors` is `ValidationError.errors()` (or FastAPI's `RequestValidationError.errors()`), whose
    locations start with "body" or "query"; a body that is not JSON is said as such.
    """
    errors = list(errors)
    if not errors:
        return "the request is not valid"
    first = errors[0]
    loc = tuple(p for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    kind = first.get("type", "")
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        at = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
        return one_line(f"the request body is not JSON: {reason}{at}")
    if (loc, kind) in _FRIENDLY:
        text = _FRIENDLY[(loc, kind)]
    elif kind == "missing":
        text = f"{_place(loc) or 'the request body'} is required"
    elif kind == "extra_forbidden":
        text = f"unknown field {_place(loc)}"
    else:
        text = f"{_place(loc) or 'the request'}: {first.get('msg', 'invalid')}"
        if "input" in first:
            text += f" (got {_shown(first['input'])})"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return one_line(text)
