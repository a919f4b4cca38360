"""`falip reproduce TABLE`: run one of the paper's tables and print it beside the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import click


def _run_falip(args: list[str]) -> None:
    """One `falip` command inside this process (the table's runs)."""
    ctx = click.get_current_context()
    ctx.find_root().command.main(args=args, prog_name="falip", standalone_mode=False)


@click.command("reproduce")
@click.argument("table", required=False)
@click.option("--list", "list_tables", is_flag=True, help="List the paper's tables and what each runs.")
@click.option(
    "--data",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file naming the data folders (template in docs/REPRODUCE.md).",
)
@click.option(
    "--model",
    default=None,
    help="Checkpoint for $MODEL instead of the config's (the paper's: OpenAI's ViT-B/16).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the table's runs; a rerun resumes them.",
)
@click.option("--limit", type=int, default=None, help="Only the first N examples of each run (a quick look).")
@click.option(
    "--print-commands", is_flag=True, help="Print the table's commands (as in docs/REPRODUCE.md) and stop."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default=None,
    help="Every run's weights and activations [default float32]; float16 on a GPU is the authors' mode.",
)
def reproduce(table, list_tables, data, model, out, limit, print_commands, quiet, dtype) -> None:
    """Run the commands of the paper's Table TABLE (resumable), then print it in the paper's layout,
    each cell ours beside the paper's number and the difference."""
    from ..errors import FalipError
    from ..paper.reproduce import (
        collect,
        format_table,
        get_table,
        load_data_config,
        run_table,
        table_commands,
        table_list,
    )

    if list_tables:
        click.echo(table_list())
        return
    if table is None:
        raise FalipError("name a table (1-14), or --list")
    spec = get_table(table)
    if print_commands:
        click.echo("\n".join(table_commands(spec.number)))
        return
    if not spec.cells and spec.number not in ("7", "8", "9"):
        raise FalipError(f"Table {spec.number} is {spec.note}")
    if data is None:
        raise FalipError("--data is needed: a TOML file naming the data folders (see docs/REPRODUCE.md)")
    config = load_data_config(Path(data))
    folder = None
    if spec.cells:
        if out is None:
            raise FalipError("--out is needed: the folder for the table's runs")
        folder = Path(out)
        run_table(
            spec.number,
            config,
            folder,
            _run_falip,
            model=model,
            limit=limit,
            dtype=dtype,
            quiet=quiet,
            log=lambda line: click.echo(line, err=True),
        )
    text = format_table(spec.number, collect(spec.number, config, folder or Path(".")))
    if spec.note:
        text += f"\n({spec.note}.)\n"
    click.echo(text, nl=False)
    if folder is not None:
        (folder / f"table{spec.number}.md").write_text(text)
        click.echo(f"written: {folder / f'table{spec.number}.md'}")
