"""The `falip` command line: one module per command group, shared option types in `options.py`."""

from .app import cli, main

__all__ = ["cli", "main"]
