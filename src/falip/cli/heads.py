"""`falip heads rank` and `falip explain`: which heads a pixel prompt moves, and pictures of attention."""

from __future__ import annotations

from pathlib import Path

import click

from ..inputs.settings import PAPER
from .options import BOX, LAYERS, given_options, say_model, say_setting


@click.group("heads")
def heads_group() -> None:
    """Attention heads: rank them by how much a pixel prompt moves them (the paper's Fig. 6)."""


@heads_group.command("rank")
@click.argument("dataset")
@click.option(
    "--model",
    "-m",
    "model_name",
    default="toy",
    show_default=True,
    help="Checkpoint (hub id, folder, OpenAI file, or the embedded toy).",
)
@click.option(
    "--prompt", default="red_circle", show_default=True, help="The pixel prompt whose effect is measured."
)
@click.option("--annotations", type=click.Path(), default=None, help="REC data: as for `falip eval rec`.")
@click.option("--images", type=click.Path(file_okay=False), default=None)
@click.option("--instances", type=click.Path(dir_okay=False), default=None)
@click.option("--detections", type=click.Path(dir_okay=False), default=None)
@click.option("--split-by", default=None)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Classification data: as for `falip eval cls`.",
)
@click.option("--cub-root", type=click.Path(file_okay=False), default=None)
@click.option("--names", type=click.Path(dir_okay=False), default=None)
@click.option("--categories", type=click.Path(dir_okay=False), default=None)
@click.option("--region", type=click.Choice(["mask", "box"]), default=None)
@click.option("--split", default=None)
@click.option("--count", type=int, default=None, help="scenes: how many test scenes [default 500].")
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option(
    "--top", type=int, default=10, show_default=True, help="How many of the strongest heads to print."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for results.jsonl, heads.csv and heads.png; a rerun resumes.",
)
@click.option("--overwrite", is_flag=True, help="Start again instead of resuming.")
@click.option(
    "--preprocess", type=click.Choice(["squash", "crop", "pad"]), default="squash", show_default=True
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def heads_rank(
    dataset,
    model_name,
    prompt,
    annotations,
    images,
    instances,
    detections,
    split_by,
    root,
    cub_root,
    names,
    categories,
    region,
    split,
    count,
    limit,
    top,
    out,
    overwrite,
    preprocess,
    device,
    quiet,
) -> None:
    """Mean norm of each head's change of the [CLS] term, ||G' - G||, between prompted and original
    images over every region of DATASET (a `falip eval rec` or `cls` data set; scenes: the REC scenes)."""
    from ..datasets import REC_DATASETS, open_cls, open_rec
    from ..engine.model import load
    from ..evaluation.heads import rank_heads, region_sets, top_heads
    from ..tasks.visual_prompts import get_visual_prompt
    from ..viz.pictures import head_grid

    get_visual_prompt(prompt)
    if dataset in REC_DATASETS:
        options = given_options(
            annotations=annotations,
            images=images,
            instances=instances,
            detections=detections,
            split=split,
            split_by=split_by,
            count=count,
        )
        data = open_rec(dataset, **options)
    else:
        options = given_options(
            root=root,
            cub_root=cub_root,
            names=names,
            categories=categories,
            region=region,
            split=split,
            count=count,
        )
        data = open_cls(dataset, **options)
    model = load(model_name, device, preprocess=preprocess)
    config = {
        "task": "heads",
        "dataset": dataset,
        "model": model_name,
        "prompt": prompt,
        "preprocess": preprocess,
        "data": options,
    }
    folder = Path(out)
    effect = rank_heads(
        model,
        region_sets(data),
        prompt,
        folder,
        config=config,
        limit=limit,
        overwrite=overwrite,
        progress=not quiet,
    )
    picture = head_grid(
        effect, folder / "heads.png", f"{model.name}: mean ||G' - G|| per head under {prompt} (0-based)"
    )
    strongest = top_heads(effect, top)
    click.echo(f"strongest {len(strongest)} heads (layer:head, 0-based, mean ||G' - G||):")
    for layer, head in strongest:
        click.echo(f"  {layer}:{head}  {effect[layer, head]:.4f}")
    click.echo(f"as an option: --unleash-heads {','.join(f'{l}:{h}' for l, h in strongest)}")
    click.echo(f"wrote {folder / 'heads.csv'} and {picture}")


@click.command("explain")
@click.argument("image", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--box",
    type=BOX,
    default=None,
    help="The region as x,y,w,h in pixels (without IMAGE: the scene's referred object).",
)
@click.option(
    "--text",
    default=None,
    help="A text for the head and token maps [default: the plain image's own embedding] and Chefer's "
    "relevance.",
)
@click.option(
    "--prompt",
    "prompts",
    default="red_circle,blur,red_circle+blur",
    show_default=True,
    help="Pixel prompts to compare; the first is unleashed.",
)
@click.option("--model", "-m", "model_name", default="toy", show_default=True)
@click.option(
    "--layer",
    type=int,
    default=-1,
    show_default=True,
    help="Layer of the [CLS] attention maps (0-based; negative from the end).",
)
@click.option(
    "--head",
    default=None,
    help="LAYER:HEAD of the one-head picture [default: the head the first prompt moves most].",
)
@click.option("--alpha", type=float, default=PAPER.alpha, show_default=True)
@click.option("--sigma", type=float, default=PAPER.sigma, show_default=True)
@click.option(
    "--layers", type=LAYERS, default=None, help="FALIP's masked layers, 0-based [default: the last third]."
)
@click.option(
    "--unleash-layers",
    type=LAYERS,
    default=None,
    help="Layers whose heads are unleashed [default: the last third].",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Without IMAGE: which generated test scene."
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for the PNGs.")
def explain_command(
    image, box, text, prompts, model_name, layer, head, alpha, sigma, layers, unleash_layers, seed, out
) -> None:
    """Pictures of what FALIP and pixel prompts do to CLIP's attention (the paper's Figs. 2, 6, 10, 15):
    attention.png, heads.png and relevance.png (Gandelsman et al.'s text-based decomposition, as the
    paper's Figs. 6 and 15), contributions.png (with --text), foveal_mask.png; heads_attention.png (raw
    attention) and chefer.png (Chefer et al.'s relevance) are extras, not the paper's."""
    from ..engine.model import load
    from ..inputs.images import open_image
    from ..inputs.masks import parse_heads
    from ..inputs.regions import check_regions
    from ..inputs.settings import FalipSettings
    from ..tasks.visual_prompts import get_visual_prompt
    from ..viz.explain import explain

    # every input is checked before the model loads
    picture = open_image(image) if image else None
    if picture is not None and box is None:
        raise click.UsageError("IMAGE needs --box x,y,w,h (without IMAGE: a generated scene and its object)")
    if picture is not None:
        check_regions([box], picture.size)
    try:
        chosen = parse_heads(head)[0] if head else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--head") from None
    names = [p.strip() for p in prompts.split(",") if p.strip()]
    for name in names:
        get_visual_prompt(name)
    FalipSettings(alpha=alpha, sigma=sigma, layers=layers)
    model = load(model_name)
    say_model(model)
    say_setting(model.settings_for(None, alpha=alpha, sigma=sigma, layers=layers), model.depth)
    if picture is None:
        from ..viz.demo import demo_scene

        scene, target, expression = demo_scene(model, seed)
        picture = scene.pil()
        region = [float(v) for v in scene.objects[target].box] if box is None else box
        text = text if text is not None else f"a photo of {expression}"
    else:
        region = box
    result = explain(
        model,
        picture,
        region,
        text=text,
        prompts=names,
        layer=layer,
        head=chosen,
        alpha=alpha,
        sigma=sigma,
        layers=layers,
        unleash_layers=unleash_layers,
        out=Path(out),
    )
    click.echo(f"box {','.join(f'{v:g}' for v in region)}" + (f", text {text!r}" if text else ""))
    for name, title in result.titles.items():
        if not name.startswith("mask_"):
            click.echo(f"  {name}: {title}")
    for path in result.pictures:
        click.echo(f"wrote {path}")
