"""The `falip` command: the root group, its commands registered from one module per command group, and the
entry point that turns user errors into one line."""

from __future__ import annotations

import sys

import click

from ..errors import FalipError
from .demo import demo, serve
from .eval import eval_group
from .heads import explain_command, heads_group
from .reproduce import reproduce
from .score import score
from .tools import bench, check_reference
from .toy import eval_toy, shape_pilot, train_toy


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="falip")
def cli() -> None:
    """FALIP: make a CLIP ViT look at a region without editing a pixel."""


for _command in (
    score,
    demo,
    serve,
    train_toy,
    shape_pilot,
    eval_toy,
    bench,
    check_reference,
    eval_group,
    reproduce,
    heads_group,
    explain_command,
):
    cli.add_command(_command)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FalipError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
