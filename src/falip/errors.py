"""The one exception type that users see for bad input, missing files and unsupported checkpoints."""


class FalipError(Exception):
    """A problem the user can fix; its message is one line that says what and where."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
