"""The door for texts: one rule, one message, at every entry point (API, CLI, web, data sets).

A text is a `str` with at least one visible character: letters, digits, punctuation, symbols or
marks. A text made only of whitespace, control or format characters (`""`, `"  "`, `"\\u200b"`) is
refused, because a tokenizer would turn it into the start and end tokens alone and the model would
score an expression that says nothing. Data-set loaders skip such a text and name it (`skipped.json`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from ..errors import FalipError


def _visible(text: str) -> bool:
    """Whether `text` holds a character outside Unicode's C (control, format, unassigned) and Z
    (space, line and paragraph separator) categories."""
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


def check_text(value) -> str:
    """`value` if it is a text with a visible character.

    Args:
        value: what the user or the data set gave as one text.
    Returns:
        The text, unchanged (the model's tokenizer cleans it as the checkpoint's own tokenizer does).
    Raises:
        FalipError: not a `str` (None, bytes, a number), or nothing visible in it.
    """
    if not isinstance(value, str):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise FalipError(f"a text must be a string, got {type(value).__name__} {shown}")
    if not _visible(value):
        raise FalipError(f"empty text {value!r}: a text needs a visible character")
    return value


def check_texts(values) -> list[str]:
    """One text or a sequence of texts, each checked by `check_text`, as a list.

    Raises:
        FalipError: no text at all (an empty list, None), or any text `check_text` refuses.
    """
    if isinstance(values, str):
        return [check_text(values)]
    if values is None or not isinstance(values, Iterable) or isinstance(values, (bytes, bytearray, dict)):
        raise FalipError(f"texts must be a string or a list of strings, got {type(values).__name__}")
    texts = [check_text(value) for value in values]
    if not texts:
        raise FalipError("no text given")
    return texts
