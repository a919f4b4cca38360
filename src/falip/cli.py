"""The `falip` command line: score regions of an image, and the throughput benchmark."""

from __future__ import annotations

import sys

import click

from .errors import FalipError


def _floats(text: str, what: str, count: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise click.BadParameter(f"{what} needs {count} numbers, got {text!r}")
    return values


def _layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"--layers takes comma-separated 0-based indices, got {text!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="falip")
def cli() -> None:
    """FALIP: make a CLIP ViT look at a region without editing a pixel."""


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--model", "-m", "model_name", required=True, help="Hub id, save_pretrained directory or OpenAI .pt/.safetensors.")
@click.option("--box", "boxes", multiple=True, help="A region as x,y,w,h in pixels (xyxy with --box-format xyxy). Repeatable.")
@click.option("--mask", "masks", multiple=True, type=click.Path(dir_okay=False), help="A region as a binary mask image of the same size. Repeatable.")
@click.option("--text", "texts", multiple=True, required=True, help="A caption to rank the regions against. Repeatable.")
@click.option("--box-format", type=click.Choice(["xywh", "xyxy"]), default="xywh", show_default=True)
@click.option("--alpha", type=float, default=0.2, show_default=True, help="Amplitude of the foveal bias.")
@click.option("--sigma", type=float, default=100.0, show_default=True, help="Gaussian width in token units.")
@click.option("--layers", default=None, help="0-based masked layers, e.g. 8,9,10,11 or -4,-3,-2,-1 [default: the last third].")
@click.option("--preprocess", type=click.Choice(["squash", "crop", "pad"]), default="squash", show_default=True)
@click.option("--tokenizer", default=None, help="Tokenizer override: hub id, directory or OpenAI BPE file.")
@click.option("--device", default="cpu", show_default=True)
def score(image, model_name, boxes, masks, texts, box_format, alpha, sigma, layers, preprocess, tokenizer, device) -> None:
    """Rank the regions of IMAGE against each --text with FALIP."""
    import numpy as np

    from .model import load
    from .preprocess import open_image

    picture = open_image(image)  # fail on a bad image before loading a large checkpoint
    regions: list = [_floats(b, "--box", 4) for b in boxes]
    labels = [f"box {b}" for b in boxes]
    for path in masks:
        regions.append(np.asarray(open_image(path).convert("L")) > 127)
        labels.append(f"mask {path}")
    if not regions:
        raise click.UsageError("give at least one region: --box x,y,w,h or --mask FILE")
    model = load(model_name, device, preprocess=preprocess, tokenizer=tokenizer)
    logits = model.score(picture, regions, list(texts), alpha=alpha, sigma=sigma, layers=_layers(layers), box_format=box_format)
    for t, text in enumerate(texts):
        click.echo(repr(text))
        for rank, r in enumerate(logits[:, t].argsort(descending=True).tolist(), 1):
            click.echo(f"  {rank:>3}. {logits[r, t].item():8.3f}  {labels[r]}")


@cli.command()
@click.option("--regions", default="1,10,30", show_default=True, help="Region counts per image.")
@click.option("--images", default=2, show_default=True, help="Images per region count.")
@click.option("--repeats", default=2, show_default=True, help="Timed runs per approach; the best counts.")
@click.option("--threads", type=int, default=None, help="torch threads [default: torch's].")
@click.option("--small", is_flag=True, help="A tiny ViT instead of ViT-B/16 (a smoke run).")
def bench(regions, images, repeats, threads, small) -> None:
    """Regions/s: the authors' approach vs a batched forward vs this engine."""
    import torch

    from . import bench as bench_mod
    from .backbones.clip import VisionConfig

    if threads:
        torch.set_num_threads(threads)
    counts = [int(v) for v in _floats(regions, "--regions")]
    vision = VisionConfig(width=64, layers=6, heads=2, patch_size=16, image_size=64, mlp_dim=128, output_dim=32) if small else bench_mod.VIT_B16
    click.echo(bench_mod.header(vision, images, repeats))
    bench_mod.run(counts, images, vision, repeats, log=click.echo)


@cli.command("check-reference")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--gaussian", type=click.Choice(["authors", "exact"]), default="authors", show_default=True)
def check_reference(folder, gaussian) -> None:
    """Compare with vectors made by the authors' FALIP code (exit 1 if out of tolerance)."""
    from .reference import check_reference as run_check

    report = run_check(folder, gaussian)
    click.echo(report.table())
    click.echo("PASS" if report.passed else "FAIL")
    if not report.passed:
        sys.exit(1)


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
