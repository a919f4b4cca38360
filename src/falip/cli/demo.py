"""`falip demo` and `falip serve`: FALIP on one image, in the terminal or the browser."""

from __future__ import annotations

from pathlib import Path

import click

from ..inputs.settings import PAPER
from .options import BOX, LAYERS, say_model, say_setting


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
    from ..inputs.regions import check_regions
    from ..inputs.settings import FalipSettings
    from ..viz.demo import PICTURE_SUFFIXES, demo_setting, run_demo

    # every input is checked before the model loads
    picture = open_image(image) if image else None
    if picture is None and boxes:
        raise click.UsageError("--box needs --image (the generated scene brings its own boxes)")
    if picture is not None and not boxes:
        raise click.UsageError("--image needs at least one --box x,y,w,h to rank")
    if picture is not None and (text is None or not text.strip()):
        raise click.UsageError("--image needs a non-empty --text to rank its boxes against")
    if picture is not None:
        check_regions(list(boxes), picture.size)
    if Path(out).suffix.lower() not in PICTURE_SUFFIXES:
        raise click.UsageError(f"--out takes a {'/'.join(PICTURE_SUFFIXES)} file, got {out!r}")
    given = {k: v for k, v in (("alpha", alpha), ("sigma", sigma), ("layers", layers)) if v is not None}
    FalipSettings(**given)  # a bad --alpha, --sigma or --layers fails here
    model = load(model_name)
    say_model(model)
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    tuned = demo_setting(model)
    setting = model.settings_for(
        None,
        alpha=tuned["alpha"] if alpha is None else alpha,
        sigma=tuned["sigma"] if sigma is None else sigma,
        layers=tuned["layers"] if layers is None else layers,
    )
    options = ", ".join(f"--{k}" for k in given)
    paper = tuned["source"] == "the paper's setting"  # describe() says so itself
    why = (
        (None if paper else tuned["source"])
        if not given
        else f"{options} as given; otherwise {tuned['source']}"
    )
    say_setting(setting, model.depth, why)
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
    from ..viz.demo import demo_setting
    from ..web.server import host_warning, make_server

    warning = host_warning(host)
    if warning:
        click.echo(warning, err=True)
    model = load(model_name, device)
    server = make_server(model, host, port, request_timeout=request_timeout)
    say_model(model)
    tuned = demo_setting(model)
    start = model.settings_for(None, alpha=tuned["alpha"], sigma=tuned["sigma"], layers=tuned["layers"])
    say_setting(
        start, model.depth, f"the page starts from it, {tuned['source']}; the page's fields change it"
    )
    click.echo(f"serving on {server.url}/ (the API's documentation: {server.url}/docs; Ctrl-C stops)")
    server.serve_forever()
