"""`falip score`: rank an image's regions against texts with FALIP."""

from __future__ import annotations

import click

from ..inputs.settings import PAPER
from .options import BOX, LAYERS, say_model, say_setting


@click.command("score")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "-m",
    "model_name",
    default="toy",
    show_default=True,
    help="Hub id, save_pretrained directory, OpenAI .pt/.safetensors, or the embedded toy.",
)
@click.option(
    "--box",
    "boxes",
    multiple=True,
    type=BOX,
    help="A region as x,y,w,h in pixels (xyxy with --box-format xyxy). Repeatable.",
)
@click.option(
    "--mask",
    "masks",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="A region as a binary mask image of the same size. Repeatable.",
)
@click.option(
    "--text", "texts", multiple=True, required=True, help="A caption to rank the regions against. Repeatable."
)
@click.option("--box-format", type=click.Choice(["xywh", "xyxy"]), default="xywh", show_default=True)
@click.option(
    "--alpha", type=float, default=PAPER.alpha, show_default=True, help="Amplitude of the foveal bias."
)
@click.option(
    "--sigma", type=float, default=PAPER.sigma, show_default=True, help="Gaussian width in token units."
)
@click.option(
    "--layers",
    type=LAYERS,
    default=None,
    help="0-based masked layers, e.g. 8,9,10,11 or -4,-3,-2,-1 [default: the last third].",
)
@click.option(
    "--preprocess", type=click.Choice(["squash", "crop", "pad"]), default="squash", show_default=True
)
@click.option("--tokenizer", default=None, help="Tokenizer override: hub id, directory or OpenAI BPE file.")
@click.option("--device", default="cpu", show_default=True)
def score(
    image, model_name, boxes, masks, texts, box_format, alpha, sigma, layers, preprocess, tokenizer, device
) -> None:
    """Rank the regions of IMAGE against each --text with FALIP."""
    import numpy as np

    from ..engine.model import load
    from ..inputs.images import open_image
    from ..inputs.regions import check_regions
    from ..inputs.settings import FalipSettings
    from ..inputs.texts import check_texts

    picture = open_image(image)  # fail on a bad image, box, text or setting before loading a large checkpoint
    check_texts(list(texts))
    if boxes:
        check_regions(list(boxes), picture.size, box_format)
    FalipSettings(alpha=alpha, sigma=sigma, layers=layers)  # checked here, before the model loads
    regions: list = list(boxes)
    labels = ["box " + ",".join(f"{v:g}" for v in b) for b in boxes]
    for path in masks:
        regions.append(np.asarray(open_image(path).convert("L")) > 127)
        labels.append(f"mask {path}")
    if not regions:
        raise click.UsageError("give at least one region: --box x,y,w,h or --mask FILE")
    model = load(model_name, device, preprocess=preprocess, tokenizer=tokenizer)
    say_model(model)
    setting = model.settings_for(None, alpha=alpha, sigma=sigma, layers=layers)
    say_setting(setting, model.depth)
    logits = model.score(picture, regions, list(texts), settings=setting, box_format=box_format)
    for t, text in enumerate(texts):
        click.echo(repr(text))
        for rank, r in enumerate(logits[:, t].argsort(descending=True).tolist(), 1):
            click.echo(f"  {rank:>3}. {logits[r, t].item():8.3f}  {labels[r]}")
