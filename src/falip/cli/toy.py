"""`falip train-toy`, `shape-pilot`, `eval-toy`: the embedded toy CLIP (a model organism, not OpenAI's
CLIP).
"""

from __future__ import annotations

import click


@click.command("train-toy")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the checkpoint.")
@click.option("--steps", default=780, show_default=True)
@click.option("--minutes", default=29.0, show_default=True, help="Wall-clock limit; stops at a whole step.")
@click.option("--batch", default=96, show_default=True)
@click.option("--width", default=128, show_default=True, help="Image tower width (the projection too).")
@click.option("--layers", default=12, show_default=True, help="Image tower depth.")
@click.option("--lr", default=1e-3, show_default=True)
@click.option(
    "--shape-rate",
    default=0.65,
    show_default=True,
    help="Share of contrast twins that differ in shape (else texture).",
)
@click.option(
    "--presence-weight",
    default=1.0,
    show_default=True,
    help="Weight of the auxiliary loss that predicts which attribute values the image holds (0: off).",
)
@click.option(
    "--object-weight",
    default=1.0,
    show_default=True,
    help="Weight of the auxiliary loss that predicts each object's attributes from the patch tokens in its "
    "box (0: off).",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cuda where a GPU is lent: many more steps in the same minutes.",
)
@click.option("--workers", default=1, show_default=True, help="Data-loader processes rendering scenes.")
def train_toy(
    out,
    steps,
    minutes,
    batch,
    width,
    layers,
    lr,
    shape_rate,
    presence_weight,
    object_weight,
    seed,
    device,
    workers,
) -> None:
    """Train the embedded toy CLIP from scratch on generated scenes (CPU by default)."""
    from ..toy.train import TrainConfig, train

    cfg = TrainConfig(
        steps=steps,
        minutes=minutes,
        batch=batch,
        width=width,
        layers=layers,
        lr=lr,
        shape_rate=shape_rate,
        presence_weight=presence_weight,
        object_weight=object_weight,
        seed=seed,
        device=device,
        workers=workers,
    )
    summary = train(cfg, out, log=click.echo)
    click.echo(
        f"{summary['steps_done']} steps in {summary['seconds']} s, final loss {summary['final_loss']}; "
        f"saved to {out}"
    )


@click.command("shape-pilot")
@click.option("--steps", default=120, show_default=True)
@click.option("--image-size", default=128, show_default=True)
@click.option("--patch", default=16, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--width", default=128, show_default=True)
@click.option("--layers", default=12, show_default=True)
@click.option(
    "--free", is_flag=True, help="Objects anywhere, not on the patch lattice (the world before the lattice)."
)
def shape_pilot(steps, image_size, patch, lr, width, layers, free) -> None:
    """Diagnose the toy model: can its ViT learn shape, supervised, in a CPU budget?"""
    from ..toy.train import shape_pilot as run_pilot

    click.echo(
        run_pilot(
            steps,
            image_size=image_size,
            patch=patch,
            width=width,
            layers=layers,
            lr=lr,
            lattice=not free,
            log=click.echo,
        )
    )


@click.command("eval-toy")
@click.option("--model", "-m", "model_name", default="toy", show_default=True)
@click.option(
    "--write", is_flag=True, help="Write metrics.json and MODEL_CARD.md into the model's directory."
)
@click.option(
    "--probe",
    is_flag=True,
    help="Only a linear probe per attribute on the image features (1500 train, 500 test single objects).",
)
def eval_toy(model_name, write, probe) -> None:
    """Measure a scene-world CLIP on held-out scenes (naming, referring expressions, region
    classification)."""
    from ..engine.model import load

    if probe:
        from ..toy.evaluate import Split, linear_probe

        model = load(model_name)
        train, test = Split.make("train", 1500, 0, offset=10_000_000), Split.make("test", 500, 0)
        for attribute, acc in linear_probe(model, train.singles, test.singles).items():
            click.echo(f"linear probe, {attribute}: {acc}")
        return
    from ..backbones.toy import checkpoint_dir
    from ..toy.report import markdown_table, measure, write_report

    model = load(model_name)
    metrics = write_report(model, checkpoint_dir(model.name)) if write else measure(model)
    click.echo(markdown_table(metrics))
