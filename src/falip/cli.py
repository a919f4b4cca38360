"""The `falip` command line: score regions, the demo, the benchmark, the toy model and the reference check."""

from __future__ import annotations

import math
import sys

import click

from .errors import FalipError


def _floats(text: str, what: str, count: int | None = None) -> list[float]:
    fields = text.replace(" ", "").split(",")
    if fields and fields[-1] == "":
        fields.pop()  # one trailing comma is harmless
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"{what} must be finite numbers, got {text!r}")
    if count is not None and len(values) != count:
        raise click.BadParameter(f"{what} needs {count} numbers, got {text!r}")
    return values


def _layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"--layers takes comma-separated 0-based indices, got {text!r}") from None
    if not values:
        raise click.BadParameter("--layers needs at least one index")
    return values


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="falip")
def cli() -> None:
    """FALIP: make a CLIP ViT look at a region without editing a pixel."""


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--model", "-m", "model_name", default="toy", show_default=True, help="Hub id, save_pretrained directory, OpenAI .pt/.safetensors, or the embedded toy.")
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
@click.option("--rec", "rec_expressions", default=None, help="Instead: a RefCOCO-shaped workload; comma-separated expressions per image, e.g. 8,7.")
@click.option("--boxes", default=10, show_default=True, help="With --rec: boxes per image.")
@click.option("--unleash", is_flag=True, help="Instead: the cost of <prompt>+unleash per region against the prompt alone.")
@click.option("--eval", "eval_run", is_flag=True, help="Instead: `falip eval rec` end to end against the compute alone.")
@click.option("--siglip", is_flag=True, help="Instead: SigLIP with FALIP, one forward per region against the encoder shared per image.")
def bench(regions, images, repeats, threads, small, rec_expressions, boxes, unleash, eval_run, siglip) -> None:
    """Regions/s: the authors' approach vs a batched forward vs this engine (or, with --rec,
    expressions/s on a referring-expression workload)."""
    import torch

    from . import bench as bench_mod
    from .backbones.clip import TextConfig, VisionConfig

    if threads:
        torch.set_num_threads(threads)
    vision = VisionConfig(width=64, layers=6, heads=2, patch_size=16, image_size=64, mlp_dim=128, output_dim=32) if small else bench_mod.VIT_B16
    if rec_expressions:
        counts = [int(v) for v in _floats(rec_expressions, "--rec")]
        text = TextConfig(width=32, layers=1, heads=1, context_length=16, vocab_size=64, mlp_dim=64, output_dim=32) if small else bench_mod.CLIP_B16_TEXT
        row = bench_mod.run_rec_workload(counts, boxes, vision, text)
        click.echo(f"ViT {vision.layers}x{vision.width} patch {vision.patch_size} @ {vision.image_size}px, text {text.layers}x{text.width} "
                   f"(random weights), torch {torch.__version__}, {torch.get_num_threads()} threads")
        click.echo(bench_mod.format_rec_row(row, boxes, len(counts)))
        return
    if eval_run:
        text = TextConfig(width=32, layers=1, heads=1, context_length=16, vocab_size=600, mlp_dim=64, output_dim=32) if small else bench_mod.CLIP_B16_TEXT
        count = max(images, 4)
        click.echo(bench_mod.format_eval_row(bench_mod.run_eval_workload(count, boxes, vision, text, repeats=repeats), boxes, count))
        return
    counts = [int(v) for v in _floats(regions, "--regions")]
    if siglip:
        shape = dict(width=64, layers=6, image_size=64) if small else {}
        for count in counts:
            alone, shared, diff = bench_mod.run_siglip_workload(count, repeats=repeats, **shape)
            click.echo(f"SigLIP {'tiny' if small else 'B/16-shaped'}, {count} regions: one forward per region {alone:.2f} regions/s | "
                       f"encoder shared, head per region {shared:.2f} regions/s | {shared / alone:.1f}x | largest feature difference {diff:.1e}")
        return
    if unleash:
        for count in counts:
            click.echo(bench_mod.format_unleash_row(bench_mod.run_unleash_workload(count, images, vision, repeats), vision))
        return
    click.echo(bench_mod.header(vision, images, repeats))
    bench_mod.run(counts, images, vision, repeats, log=click.echo)


@cli.command()
@click.option("--model", "-m", "model_name", default="toy", show_default=True, help="Checkpoint; the embedded toy model by default.")
@click.option("--image", type=click.Path(dir_okay=False), default=None, help="Your own image [default: a generated test scene].")
@click.option("--box", "boxes", multiple=True, help="x,y,w,h of a candidate region (repeatable; with --image).")
@click.option("--text", default=None, help="The expression to rank the boxes against.")
@click.option("--labels", default=None, help="Comma-separated names to classify each box among.")
@click.option("--seed", default=0, show_default=True, help="Which generated scene.")
@click.option("--alpha", type=float, default=None, help="[default: tuned for the model if it ships metrics.json, else 0.2]")
@click.option("--sigma", type=float, default=None, help="[default: tuned, else 100]")
@click.option("--layers", default=None, help="0-based masked layers [default: tuned, else the last third].")
@click.option("--out", type=click.Path(dir_okay=False), default="falip-demo.png", show_default=True)
def demo(model_name, image, boxes, text, labels, seed, alpha, sigma, layers, out) -> None:
    """FALIP on one image: rank boxes for an expression, name each box, and draw where [CLS] looks."""
    from .demo import demo_setting, run_demo
    from .model import load
    from .preprocess import open_image

    picture = open_image(image) if image else None  # a bad image fails before the model loads
    if picture is None and boxes:
        raise click.UsageError("--box needs --image (the generated scene brings its own boxes)")
    model = load(model_name)
    if model.name == "toy":
        click.echo("model: the embedded toy CLIP (trained on generated shapes; a model organism, not OpenAI's CLIP)")
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    setting = demo_setting(model)
    if alpha is None and sigma is None and layers is None:
        click.echo(f"FALIP setting: alpha {setting['alpha']}, sigma {setting['sigma']}, layers {setting['layers'] or 'last third'} ({setting['source']})")
    result = run_demo(
        model, out, picture, [_floats(b, "--box", 4) for b in boxes] or None, text, names, seed,
        alpha, sigma, _layers(layers),
    )
    click.echo(f"expression: {result.text!r}" + (f" (refers to box {result.expected + 1})" if result.expected is not None else ""))
    for rank, i in enumerate(sorted(range(len(result.scores)), key=lambda i: -result.scores[i]), 1):
        name = f"  looks like: {result.labels[i]}" if result.labels[i] else ""
        box = ",".join(f"{v:g}" for v in result.boxes[i])
        click.echo(f"  {rank}. score {result.scores[i]:7.3f}  box {i + 1} ({box}){name}")
    plain, focused = result.attention_inside
    click.echo(f"[CLS] attention inside the best box, last layer: {100 * plain:.0f}% plain, {100 * focused:.0f}% with FALIP")
    click.echo(f"wrote {result.picture}")


@cli.command("train-toy")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the checkpoint.")
@click.option("--steps", default=780, show_default=True)
@click.option("--minutes", default=29.0, show_default=True, help="Wall-clock limit; stops at a whole step.")
@click.option("--batch", default=96, show_default=True)
@click.option("--width", default=128, show_default=True, help="Image tower width (the projection too).")
@click.option("--layers", default=12, show_default=True, help="Image tower depth.")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--shape-rate", default=0.65, show_default=True, help="Share of contrast twins that differ in shape (else texture).")
@click.option("--presence-weight", default=1.0, show_default=True,
              help="Weight of the auxiliary loss that predicts which attribute values the image holds (0: off).")
@click.option("--object-weight", default=1.0, show_default=True,
              help="Weight of the auxiliary loss that predicts each object's attributes from the patch tokens in its box (0: off).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cuda where a GPU is lent: many more steps in the same minutes.")
@click.option("--workers", default=1, show_default=True, help="Data-loader processes rendering scenes.")
def train_toy(out, steps, minutes, batch, width, layers, lr, shape_rate, presence_weight, object_weight, seed, device, workers) -> None:
    """Train the embedded toy CLIP from scratch on generated scenes (CPU by default)."""
    from .scenes.train import TrainConfig, train

    cfg = TrainConfig(steps=steps, minutes=minutes, batch=batch, width=width, layers=layers, lr=lr,
                      shape_rate=shape_rate, presence_weight=presence_weight, object_weight=object_weight, seed=seed, device=device, workers=workers)
    summary = train(cfg, out, log=click.echo)
    click.echo(f"{summary['steps_done']} steps in {summary['seconds']} s, final loss {summary['final_loss']}; saved to {out}")


@cli.command("shape-pilot")
@click.option("--steps", default=120, show_default=True)
@click.option("--image-size", default=128, show_default=True)
@click.option("--patch", default=16, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--width", default=128, show_default=True)
@click.option("--layers", default=12, show_default=True)
@click.option("--free", is_flag=True, help="Objects anywhere, not on the patch lattice (the world before the lattice).")
def shape_pilot(steps, image_size, patch, lr, width, layers, free) -> None:
    """Diagnose the toy model: can its ViT learn shape, supervised, in a CPU budget?"""
    from .scenes.train import shape_pilot as run_pilot

    click.echo(run_pilot(steps, image_size=image_size, patch=patch, width=width, layers=layers, lr=lr, lattice=not free, log=click.echo))


@cli.command("eval-toy")
@click.option("--model", "-m", "model_name", default="toy", show_default=True)
@click.option("--write", is_flag=True, help="Write metrics.json and MODEL_CARD.md into the model's directory.")
@click.option("--probe", is_flag=True, help="Only a linear probe per attribute on the image features (1500 train, 500 test single objects).")
def eval_toy(model_name, write, probe) -> None:
    """Measure a scene-world CLIP on held-out scenes (naming, referring expressions, region classification)."""
    from .model import load

    if probe:
        from .scenes.evaluate import Split, linear_probe

        model = load(model_name)
        train, test = Split.make("train", 1500, 0, offset=10_000_000), Split.make("test", 500, 0)
        for attribute, acc in linear_probe(model, train.singles, test.singles).items():
            click.echo(f"linear probe, {attribute}: {acc}")
        return
    from .scenes.report import markdown_table, measure, write_report

    from .backbones.toy import checkpoint_dir

    model = load(model_name)
    metrics = write_report(model, checkpoint_dir(model.name)) if write else measure(model)
    click.echo(markdown_table(metrics))


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


@cli.command()
@click.option("--model", "-m", "model_name", default="toy", show_default=True, help="Checkpoint (hub id, folder, OpenAI file, or the embedded toy).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def serve(model_name, host, port, device) -> None:
    """FALIP in the browser: upload a photo, draw boxes, type what to look for."""
    from .model import load
    from .web import TOY_NOTE, make_server

    model = load(model_name, device)
    server = make_server(model, host, port)
    click.echo(f"model: {TOY_NOTE if model.name == 'toy' else model.name}")
    click.echo(f"serving on http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


from .cli_eval import eval_group  # noqa: E402  (after `cli`, which it joins)
from .cli_heads import explain_command, heads_group  # noqa: E402
from .cli_reproduce import reproduce  # noqa: E402

cli.add_command(eval_group)
cli.add_command(reproduce)
cli.add_command(heads_group)
cli.add_command(explain_command)


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
