"""`python -m falip` is the `falip` command."""

from .cli import main

main()
