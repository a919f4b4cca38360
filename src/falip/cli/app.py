"""The `falip` command: the root group, its commands registered from one module per command group, and the
entry point that turns user errors into one line."""

from __future__ import annotations

import sys

import click

from ..errors import FalipError, command_line
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


def usage_message(exc: click.ClickException) -> str:
    """Click's own error as one line: the message alone when it names its option (our `ParamType`s do),
    else click's (``Invalid value for '--port': ...``, ``No such option: --foo``), first letter lowered."""
    message = exc.format_message()
    param = getattr(exc, "param", None)
    names_itself = param is not None and any(o in exc.message for o in param.opts)
    if isinstance(exc, click.BadParameter) and names_itself:
        message = exc.message
    message = " ".join(message.split())
    return message[:1].lower() + message[1:] if message[1:2].islower() else message


def main() -> None:
    """Entry point: every user error, click's usage errors included, is one line `error: ...` on stderr
    and exit status 2; `falip` alone prints its help."""
    try:
        with command_line():
            cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {usage_message(exc)}", err=True)
        sys.exit(2)
    except FalipError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
