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
    help="TOML file naming the data folders (template in docs/REPRODUCE.md), or `scenes`: the scene world "
    "and the embedded toy model, offline.",
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
@click.option(
    "--count", type=int, default=None, help="With --data scenes: how many test scenes [default 500]."
)
@click.option(
    "--modelnet40",
    type=click.Path(file_okay=False),
    default=None,
    help="With --data scenes: a ModelNet40 folder for Table 3, e.g. ../shared/data/modelnet40-sample.",
)
@click.option(
    "--scanobjectnn",
    type=click.Path(file_okay=False),
    default=None,
    help="With --data scenes: ScanObjectNN's h5_files.",
)
def reproduce(
    table, list_tables, data, model, out, limit, print_commands, quiet, dtype, count, modelnet40, scanobjectnn
) -> None:
    """Run the commands of the paper's Table TABLE (resumable), then print it in the paper's layout,
    each cell ours beside the paper's number and the difference.

    With `--data scenes` every table runs offline on the scene world with the embedded toy model (a model
    organism, not OpenAI's CLIP): the paper's rows in its order, the paper's average beside ours with its
    Wilson 95% interval, and each row's rank in both."""
    from ..errors import FalipError
    from ..paper.reproduce import (
        collect,
        fill_in,
        format_table,
        get_table,
        load_data_config,
        run_table,
        table_commands,
        table_list,
    )
    from .eval import reuse_models

    if list_tables:
        click.echo(table_list())
        return
    if table is None:
        raise FalipError("name a table (1-14), or --list")
    spec = get_table(table)
    if data == "scenes":
        with reuse_models():  # the table's runs share the model
            _scenes(
                spec.number, model, out, limit, print_commands, quiet, dtype, count, modelnet40, scanobjectnn
            )
        return
    if count is not None or modelnet40 is not None or scanobjectnn is not None:
        raise FalipError("--count, --modelnet40 and --scanobjectnn go with --data scenes")
    if print_commands:
        config = load_data_config(Path(data)) if data else {}
        given = Path(out) if out else None
        click.echo("\n".join(fill_in(c, config, given, model) for c in table_commands(spec.number)))
        return
    if not spec.cells and spec.number not in ("7", "8", "9"):
        raise FalipError(f"Table {spec.number} is {spec.note}")
    if data is None:
        raise FalipError("--data is needed: a TOML file naming the data folders (see docs/REPRODUCE.md)")
    config = load_data_config(Path(data))
    folder = None
    left_out: list[str] = []
    if spec.cells:
        if out is None:
            raise FalipError("--out is needed: the folder for the table's runs")
        folder = Path(out)
        with reuse_models():  # the table's runs share their models
            left_out = run_table(
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
    if left_out:
        text += "\nNot run (their cells show -):\n" + "".join(f"- {line}\n" for line in left_out)
    click.echo(text, nl=False)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)  # also when no run could be made
        (folder / f"table{spec.number}.md").write_text(text)
        click.echo(f"written: {folder / f'table{spec.number}.md'}")


def _scenes(number, model, out, limit, print_commands, quiet, dtype, count, modelnet40, scanobjectnn) -> None:
    """`falip reproduce N --data scenes`: the table's commands derived for the scene world, run, printed."""
    from ..errors import FalipError
    from ..inputs import checks
    from ..paper.scenes import DEFAULT_COUNT, TOY, print_scene_commands, run_scene_table, scene_table

    count = checks.count("--count", DEFAULT_COUNT if count is None else count)
    clouds = {k: v for k, v in (("modelnet40", modelnet40), ("scanobjectnn", scanobjectnn)) if v is not None}
    model = model or TOY
    if print_commands:
        click.echo(print_scene_commands(number, count, model, clouds))
        return
    folder = None
    if number not in ("7", "8", "9"):
        if out is None:
            raise FalipError("--out is needed: the folder for the table's runs")
        folder = Path(out)
        run_scene_table(
            number,
            folder,
            _run_falip,
            count=count,
            model=model,
            clouds=clouds,
            limit=limit,
            dtype=dtype,
            quiet=quiet,
            log=lambda line: click.echo(line, err=True),
        )
    text = scene_table(number, folder, count, model, clouds)
    click.echo(text, nl=False)
    if folder is not None:
        (folder / f"table{number}_scenes.md").write_text(text)
        click.echo(f"written: {folder / f'table{number}_scenes.md'}")
