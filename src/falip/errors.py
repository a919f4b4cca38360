"""The one exception type that users see for bad input, missing files and unsupported checkpoints."""


class FalipError(Exception):
    """A problem the user can fix; its message is one line that says what and where."""
