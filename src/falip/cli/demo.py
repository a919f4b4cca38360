"""`falip demo` and `falip serve`: FALIP on one image, in the terminal or the browser."""

from __future__ import annotations

import click

from ..inputs.settings import PAPER
from .options import BOX, LAYERS


@click.command("demo")
@click.option(
    "--model",
    "-m",
    "model_name",
    default="toy",
    show_default=True,
    help="Checkpoint; the embedded toy model by default.",
)
@click.option(
    "--image",
    type=click.Path(dir_okay=False),
    default=None,
    help="Your own image [default: a generated test scene].",
)
@click.option(
    "--box",
    "boxes",
    multiple=True,
    type=BOX,
    help="x,y,w,h of a candidate region (repeatable; with --image).",
)
@click.option("--text", default=None, help="The expression to rank the boxes against.")
@click.option("--labels", default=None, help="Comma-separated names to classify each box among.")
@click.option("--seed", default=0, show_default=True, help="Which generated scene.")
@click.option(
    "--alpha",
    type=float,
    default=None,
    help=f"[default: tuned for the model if it ships metrics.json, else {PAPER.alpha}]",
)
@click.option("--sigma", type=float, default=None, help=f"[default: tuned, else {PAPER.sigma:g}]")
@click.option(
    "--layers", type=LAYERS, default=None, help="0-based masked layers [default: tuned, else the last third]."
)
@click.option("--out", type=click.Path(dir_okay=False), default="falip-demo.png", show_default=True)
def demo(model_name, image, boxes, text, labels, seed, alpha, sigma, layers, out) -> None:
    """FALIP on one image: rank boxes for an expression, name each box, and draw where [CLS] looks."""
    from ..engine.model import load
    from ..inputs.images import open_image
    from ..viz.demo import demo_setting, run_demo

    picture = open_image(image) if image else None  # a bad image fails before the model loads
    if picture is None and boxes:
        raise click.UsageError("--box needs --image (the generated scene brings its own boxes)")
    model = load(model_name)
    if model.name == "toy":
        click.echo(
            "model: the embedded toy CLIP (trained on generated shapes; a model organism, not OpenAI's CLIP)"
        )
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    setting = demo_setting(model)
    if alpha is None and sigma is None and layers is None:
        click.echo(
            f"FALIP setting: alpha {setting['alpha']}, sigma {setting['sigma']}, layers "
            f"{setting['layers'] or 'last third'} ({setting['source']})"
        )
    result = run_demo(
        model,
        out,
        picture,
        list(boxes) or None,
        text,
        names,
        seed,
        alpha,
        sigma,
        layers,
    )
    click.echo(
        f"expression: {result.text!r}"
        + (f" (refers to box {result.expected + 1})" if result.expected is not None else "")
    )
    for rank, i in enumerate(sorted(range(len(result.scores)), key=lambda i: -result.scores[i]), 1):
        name = f"  looks like: {result.labels[i]}" if result.labels[i] else ""
        box = ",".join(f"{v:g}" for v in result.boxes[i])
        click.echo(f"  {rank}. score {result.scores[i]:7.3f}  box {i + 1} ({box}){name}")
    plain, focused = result.attention_inside
    click.echo(
        f"[CLS] attention inside the best box, last layer: {100 * plain:.0f}% plain, {100 * focused:.0f}% "
        "with FALIP"
    )
    click.echo(f"wrote {result.picture}")


@click.command()
@click.option(
    "--model",
    "-m",
    "model_name",
    default="toy",
    show_default=True,
    help="Checkpoint (hub id, folder, OpenAI file, or the embedded toy).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but a loopback address (0.0.0.0: every interface) prints a warning.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    help="Seconds a client has to send a whole request (408 beyond).",
)
def serve(model_name, host, port, device, request_timeout) -> None:
    """FALIP in the browser: upload a photo, draw boxes, type what to look for (API at /docs)."""
    from ..engine.model import load
    from ..web.server import TOY_NOTE, host_warning, make_server

    warning = host_warning(host)
    if warning:
        click.echo(warning, err=True)
    model = load(model_name, device)
    server = make_server(model, host, port, request_timeout=request_timeout)
    click.echo(f"model: {TOY_NOTE if model.name == 'toy' else model.name}")
    click.echo(f"serving on {server.url}/ (the API's documentation: {server.url}/docs; Ctrl-C stops)")
    server.serve_forever()
