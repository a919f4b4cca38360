"""`falip bench` and `falip check-reference`: speed, and agreement with the authors' code."""

from __future__ import annotations

import sys

import click

from ..inputs.settings import PAPER
from .options import numbers, say_setting


@click.command("bench")
@click.option("--regions", default="1,10,30", show_default=True, help="Region counts per image.")
@click.option("--images", default=2, show_default=True, help="Images per region count.")
@click.option("--repeats", default=2, show_default=True, help="Timed runs per approach; the best counts.")
@click.option("--threads", type=int, default=None, help="torch threads [default: torch's].")
@click.option("--small", is_flag=True, help="A tiny ViT instead of ViT-B/16 (a smoke run).")
@click.option(
    "--rec",
    "rec_expressions",
    default=None,
    help="Instead: a RefCOCO-shaped workload; comma-separated expressions per image, e.g. 8,7.",
)
@click.option("--boxes", default=10, show_default=True, help="With --rec: boxes per image.")
@click.option(
    "--unleash",
    is_flag=True,
    help="Instead: the cost of <prompt>+unleash per region against the prompt alone.",
)
@click.option(
    "--eval", "eval_run", is_flag=True, help="Instead: `falip eval rec` end to end against the compute alone."
)
@click.option(
    "--siglip",
    is_flag=True,
    help="Instead: SigLIP with FALIP, one forward per region against the encoder shared per image.",
)
def bench(
    regions, images, repeats, threads, small, rec_expressions, boxes, unleash, eval_run, siglip
) -> None:
    """Regions/s: the authors' approach vs a batched forward vs this engine (or, with --rec,
    expressions/s on a referring-expression workload)."""
    import torch

    from ..backbones.clip import TextConfig, VisionConfig
    from ..evaluation import bench as bench_mod

    if threads:
        torch.set_num_threads(threads)
    vision = (
        VisionConfig(width=64, layers=6, heads=2, patch_size=16, image_size=64, mlp_dim=128, output_dim=32)
        if small
        else bench_mod.VIT_B16
    )
    say_setting(PAPER, vision.layers, "every approach, on random weights")
    if rec_expressions:
        counts = [int(v) for v in numbers(rec_expressions, "--rec")]
        text = (
            TextConfig(
                width=32, layers=1, heads=1, context_length=16, vocab_size=64, mlp_dim=64, output_dim=32
            )
            if small
            else bench_mod.CLIP_B16_TEXT
        )
        row = bench_mod.run_rec_workload(counts, boxes, vision, text)
        click.echo(
            f"ViT {vision.layers}x{vision.width} patch {vision.patch_size} @ {vision.image_size}px, text "
            f"{text.layers}x{text.width} "
            f"(random weights), torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        click.echo(bench_mod.format_rec_row(row, boxes, len(counts)))
        return
    if eval_run:
        text = (
            TextConfig(
                width=32, layers=1, heads=1, context_length=16, vocab_size=600, mlp_dim=64, output_dim=32
            )
            if small
            else bench_mod.CLIP_B16_TEXT
        )
        count = max(images, 4)
        click.echo(
            bench_mod.format_eval_row(
                bench_mod.run_eval_workload(count, boxes, vision, text, repeats=repeats), boxes, count
            )
        )
        return
    counts = [int(v) for v in numbers(regions, "--regions")]
    if siglip:
        shape = dict(width=64, layers=6, image_size=64) if small else {}
        for count in counts:
            alone, shared, diff = bench_mod.run_siglip_workload(count, repeats=repeats, **shape)
            click.echo(
                f"SigLIP {'tiny' if small else 'B/16-shaped'}, {count} regions: one forward per region "
                f"{alone:.2f} regions/s | "
                f"encoder shared, head per region {shared:.2f} regions/s | {shared / alone:.1f}x | largest "
                f"feature difference {diff:.1e}"
            )
        return
    if unleash:
        for count in counts:
            click.echo(
                bench_mod.format_unleash_row(
                    bench_mod.run_unleash_workload(count, images, vision, repeats), vision
                )
            )
        return
    click.echo(bench_mod.header(vision, images, repeats))
    bench_mod.run(counts, images, vision, repeats, log=click.echo)


@click.command("check-reference")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--gaussian", type=click.Choice(["authors", "exact"]), default="authors", show_default=True)
def check_reference(folder, gaussian) -> None:
    """Compare with vectors made by the authors' FALIP code (exit 1 if out of tolerance)."""
    from ..paper.reference import check_reference as run_check

    report = run_check(folder, gaussian)
    click.echo(report.table())
    click.echo("PASS" if report.passed else "FAIL")
    if not report.passed:
        sys.exit(1)
