"""The one exception type that users see for bad input, missing files and unsupported checkpoints, and how
its messages name an argument (an option on the command line, a keyword in Python)."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar


class FalipError(Exception):
    """A problem the user can fix; its message is one line that says what and where."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_COMMAND_LINE: ContextVar[bool] = ContextVar("falip_command_line", default=False)


@contextmanager
def command_line():
    """Within this block errors name the `falip` command's options (`--tokenizer`) instead of the Python
    arguments (`tokenizer=`): the CLI's entry point runs every command inside it."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def spelled(argument: str) -> str:
    """How a message names an argument to the user: ``--split-by`` on the command line, ``split_by=`` in
    Python (`argument` is the Python name, e.g. ``"split_by"``)."""
    return "--" + argument.replace("_", "-") if _COMMAND_LINE.get() else f"{argument}="
