"""`python -m falip` is the `falip` command."""

from .cli.app import main

main()
