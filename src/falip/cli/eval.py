"""`falip eval rec|cls DATASET`: the paper's benchmarks (and the scene world) from the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import click

from ..datasets import CLOUD_DATASETS, CLS_DATASETS, REC_DATASETS
from ..inputs.settings import PAPER
from .options import LAYERS, given_options, numbers, say_model, say_setting


def _list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _split_help(registry: dict) -> str:
    """--split's help: each data set's default split, read off its loader."""
    from ..datasets import default_splits

    splits = default_splits(registry)
    named = [f"{name} {split}" for name, split in splits.items() if split]
    required = [name for name, split in splits.items() if split is None]
    fixed = [name for name in registry if name not in splits]
    text = f"Data set split [default: {', '.join(named)}]"
    if required:
        text += f"; required for {', '.join(required)}"
    if fixed:
        text += f"; {', '.join(fixed)}: the annotation file is the split"
    return text + "."


def _shared_options(registry: dict, ensemble: bool, region_methods: bool):
    """The options every `falip eval` command shares; `ensemble` when the command has --ensemble,
    `region_methods` when it takes every region method (with PASTA's and unleash's own options)."""
    options = [
        click.argument("dataset"),
        click.option(
            "--model",
            "-m",
            "models",
            multiple=True,
            default=("toy",),
            show_default=True,
            help="Checkpoint(s); several give one row each"
            + (" (and join an --ensemble)." if ensemble else "."),
        ),
        click.option(
            "--method",
            "methods",
            default="plain,falip",
            show_default=True,
            help="Comma-separated region methods (see `falip eval methods`)."
            if region_methods
            else "Comma-separated: plain, falip.",
        ),
        click.option("--alpha", type=float, default=PAPER.alpha, show_default=True),
        click.option("--sigma", type=float, default=PAPER.sigma, show_default=True),
        click.option(
            "--layers", type=LAYERS, default=None, help="0-based masked layers [default: the last third]."
        ),
        click.option(
            "--form",
            type=click.Choice(["cls", "all", "diag"]),
            default="cls",
            show_default=True,
            help="Mask form a/b/c (Table 6).",
        ),
    ]
    method_options = [
        click.option(
            "--pasta-scale",
            type=float,
            default=0.01,
            show_default=True,
            help="pasta: the factor on attention to keys outside the region.",
        ),
        click.option(
            "--pasta-heads",
            default=None,
            help="pasta: LAYER:HEAD,... (0-based) to steer [default: every head of --layers].",
        ),
        click.option(
            "--unleash-layers",
            type=LAYERS,
            default=None,
            help="<prompt>+unleash: 0-based layers whose heads are edited [default: the last third].",
        ),
        click.option(
            "--unleash-heads",
            default=None,
            help="<prompt>+unleash: LAYER:HEAD,... to edit [default: every head of --unleash-layers].",
        ),
    ]
    rest = [
        click.option("--split", default=None, help=_split_help(registry)),
        click.option(
            "--limit", type=int, default=None, help="Only the first N expressions / images (a quick run)."
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False),
            required=True,
            help="Folder for results.jsonl and summary.{md,csv,json}; a rerun resumes.",
        ),
        click.option("--overwrite", is_flag=True, help="Start again instead of resuming."),
        click.option(
            "--preprocess", type=click.Choice(["squash", "crop", "pad"]), default="squash", show_default=True
        ),
        click.option("--device", default="cpu", show_default=True),
        click.option(
            "--dtype",
            type=click.Choice(["float32", "float16", "bfloat16"]),
            default="float32",
            show_default=True,
            help="Weights and activations; float16 on a GPU is the authors' mode (OpenAI's clip.load keeps "
            "fp16 weights on CUDA).",
        ),
        click.option("--seed", default=0, show_default=True),
        click.option("--quiet", is_flag=True, help="No progress bar."),
        click.option(
            "--strict",
            is_flag=True,
            help="Stop at the first bad annotation or example instead of skipping it.",
        ),
    ]
    chosen = options + (method_options if region_methods else []) + rest

    def decorate(func):
        for option in reversed(chosen):
            func = option(func)
        return func

    return decorate


_LOADED: ContextVar[dict | None] = ContextVar("falip_loaded_models", default=None)


@contextmanager
def reuse_models() -> Iterator[None]:
    """Within this block every `falip eval` run loads each (checkpoint, device, preprocessing, dtype) once
    and reuses it: the runs of one `falip reproduce` table share their model instead of loading it per
    run. Nested blocks share the outer block's models."""
    outer = _LOADED.get()
    token = _LOADED.set({} if outer is None else outer)
    try:
        yield
    finally:
        _LOADED.reset(token)


def _models(names, device, preprocess, dtype: str = "float32") -> dict:
    """Loaded models under short row names: a local path's last part, a hub id as it is; in `dtype`."""
    from ..engine.model import load

    cache = _LOADED.get()
    out = {}
    for name in names:
        short = Path(name).name if Path(name).exists() else name
        while short in out:
            short += "'"
        key = (name, device, preprocess, dtype)
        if cache is not None and key in cache:
            out[short] = cache[key]
            continue
        out[short] = load(name, device, preprocess=preprocess, dtype=dtype)
        if cache is not None:
            cache[key] = out[short]
    return out


def _loaded(names, device, preprocess, config, dtype: str = "float32") -> dict:
    """The models, loaded once the data and the settings have passed their checks; says which models and
    which FALIP setting the run uses."""
    import os

    from ..inputs.settings import FalipSettings

    models = _models(names, device, preprocess, dtype)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for all
        return models
    for model in models.values():
        say_model(model)
    depths = {model.depth for model in models.values()}
    setting = FalipSettings(alpha=config.alpha, sigma=config.sigma, layers=config.layers, form=config.form)
    say_setting(setting, depths.pop() if len(depths) == 1 else None, "in every method with FALIP")
    return models


def _report(summary: dict, out: str) -> None:
    """The summary table, printed once (by rank 0 under torchrun)."""
    import os

    from ..evaluation.summary import markdown

    if os.environ.get("RANK", "0") != "0":
        return
    click.echo(markdown(summary), nl=False)
    click.echo(f"results: {Path(out) / 'results.jsonl'}; summary: {Path(out) / 'summary.md'} (.csv, .json)")
    skipped = Path(out) / "skipped.json"
    if skipped.is_file():
        listed = json.loads(skipped.read_text())
        click.echo(
            f"skipped {listed['count']} bad example(s) or annotation(s), e.g. {listed['skipped'][0]}; all "
            f"in {skipped}",
            err=True,
        )


def _run_task(
    task: str, dataset: str, options: dict, open_data, run, data_keys: tuple[str, ...], **own
) -> None:
    """One `falip eval rec|cls` run from its command-line options: the data set opened from the options
    named by `data_keys` (those given are also saved in the run's config), a `RunConfig` of the options
    every eval command shares (`_shared_options`) and the task's `own` fields, the models loaded once the
    data and the settings have passed their checks, then the run and its printed summary."""
    from ..datasets.base import strict_data
    from ..evaluation.runner import RunConfig

    with strict_data(options["strict"]):
        data_opts = given_options(**{key: options[key] for key in data_keys})
        data = open_data(dataset, **data_opts)
        config = RunConfig(
            task,
            dataset,
            list(options["models"]),
            _list(options["methods"]),
            options["alpha"],
            options["sigma"],
            options["layers"],
            options["form"],
            dtype=options["dtype"],
            seed=options["seed"],
            pasta_scale=options["pasta_scale"],
            pasta_heads=options["pasta_heads"],
            unleash_layers=options["unleash_layers"],
            unleash_heads=options["unleash_heads"],
            data=data_opts,
            **own,
        )
        models = _loaded(
            options["models"], options["device"], options["preprocess"], config, options["dtype"]
        )
        summary = run(
            models,
            data,
            config,
            Path(options["out"]),
            limit=options["limit"],
            overwrite=options["overwrite"],
            progress=not options["quiet"],
        )
        _report(summary, options["out"])


@click.group("eval")
def eval_group() -> None:
    """Evaluate methods on referring expressions (rec) or region classification (cls)."""


@eval_group.command("rec")
@_shared_options(REC_DATASETS, ensemble=True, region_methods=True)
@click.option(
    "--annotations",
    type=click.Path(),
    default=None,
    help="reclip: the jsonl; refer: the folder with refs(unc).p and instances.json; transvg: the .pth split "
    "file.",
)
@click.option(
    "--images", type=click.Path(file_okay=False), default=None, help="Image folder (COCO train2014)."
)
@click.option(
    "--instances",
    type=click.Path(dir_okay=False),
    default=None,
    help="transvg: COCO instances.json for the candidate boxes.",
)
@click.option(
    "--detections",
    type=click.Path(dir_okay=False),
    default=None,
    help="Detector proposals (ReCLIP's JSON) instead of gold candidates.",
)
@click.option("--split-by", default=None, help="refer: unc, umd or google.")
@click.option("--count", type=int, default=None, help="scenes: how many test scenes [default 500].")
@click.option(
    "--phrasing",
    type=click.Choice(["scenes", "relations"]),
    default=None,
    help="scenes: the scene world's own expressions [default], or relation scenes (twins told apart by "
    "position or size, accuracy per group).",
)
@click.option(
    "--spacy-pipeline",
    default="en_core_web_sm",
    show_default=True,
    envvar="FALIP_SPACY_PIPELINE",
    show_envvar=True,
    help="reclip and <method>+relations: spaCy's English pipeline for ReCLIP's relation resolver.",
)
@click.option("--template", default="a photo of {}", show_default=True)
@click.option(
    "--subtract",
    is_flag=True,
    help="RedCircle's subtract (the paper's Sec. 3.3.1 after [40]): minus each box's mean score over "
    "--negatives captions of other images.",
)
@click.option(
    "--negatives",
    type=int,
    default=500,
    show_default=True,
    help="With --subtract: negative captions per expression (the authors' 500).",
)
@click.option(
    "--ensemble",
    type=click.Choice(["sum", "max", "softmax-sum", "softmax-max"]),
    default=None,
    help="Add a row combining every model and method: raw logits summed (sum, the authors') or maxed, or "
    "each softmax-normalised over boxes first.",
)
@click.option("--iou", type=float, default=0.5, show_default=True)
@click.option(
    "--ties",
    type=click.Choice(["first", "chance"]),
    default="first",
    show_default=True,
    help="Boxes tied for the best score: the first is the prediction (the authors' argmax), or the tie "
    "counts as a random pick's expected accuracy.",
)
def eval_rec(dataset, **options) -> None:
    """Referring expression comprehension: pick each expression's box among the candidates.

    DATASET: reclip, refer, transvg or scenes (the toy model's test scenes)."""
    from ..datasets import open_rec
    from ..evaluation.runner import run_rec
    from ..inputs import checks

    data_keys = ("annotations", "images", "instances", "detections", "split", "split_by", "count", "phrasing")
    _run_task(
        "rec",
        dataset,
        options,
        open_rec,
        run_rec,
        data_keys,
        template=options["template"],
        subtract=checks.count("--negatives", options["negatives"]) if options["subtract"] else 0,
        ensemble=options["ensemble"],
        iou=options["iou"],
        ties=options["ties"],
        spacy_pipeline=options["spacy_pipeline"],
    )


@eval_group.command("cls")
@_shared_options(CLS_DATASETS, ensemble=False, region_methods=True)
@click.option("--root", type=click.Path(file_okay=False), default=None, help="The dataset's folder.")
@click.option(
    "--cub-root",
    type=click.Path(file_okay=False),
    default=None,
    help="waterbirds: CUB_200_2011 for the bird boxes.",
)
@click.option(
    "--names",
    type=click.Path(dir_okay=False),
    default=None,
    help="imagenet-s: 'wnid name' lines for class names [default: the shipped names of CLIP's zero-shot "
    "ImageNet evaluation].",
)
@click.option(
    "--categories",
    type=click.Path(dir_okay=False),
    default=None,
    help="imagenet-s: the variant's category list.",
)
@click.option(
    "--region",
    type=click.Choice(["box", "mask"]),
    default=None,
    help="imagenet-s: the mask's box (the paper's, default) or the mask itself.",
)
@click.option("--count", type=int, default=None, help="scenes: how many test scenes [default 500].")
@click.option(
    "--templates",
    default="photo",
    show_default=True,
    help="A template set (photo, bird, dog, ensemble7) or templates separated by '|'.",
)
def eval_cls(dataset, **options) -> None:
    """Region-prompted classification: name each image's region; top-1 and top-5.

    DATASET: cub, dogs, waterbirds, imagenet-s or scenes."""
    from ..datasets import open_cls
    from ..evaluation.runner import run_cls
    from ..tasks.classify import TEMPLATE_SETS

    templates = options["templates"]
    _run_task(
        "cls",
        dataset,
        options,
        open_cls,
        run_cls,
        ("root", "cub_root", "names", "categories", "region", "split", "count"),
        templates=templates if templates in TEMPLATE_SETS else [t for t in templates.split("|") if t],
    )


@eval_group.command("pointcloud")
@_shared_options(CLOUD_DATASETS, ensemble=False, region_methods=False)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    required=True,
    help="modelnet40: modelnet40_normal_resampled or modelnet40_ply_hdf5_2048; scanobjectnn: h5_files.",
)
@click.option(
    "--variant",
    type=click.Choice(["obj_only", "obj_bg", "pb_t50_rs"]),
    default=None,
    help="scanobjectnn: the variant [default obj_only].",
)
@click.option(
    "--points", type=int, default=1024, show_default=True, help="Points sampled per cloud (seeded)."
)
@click.option(
    "--region",
    type=click.Choice(["box", "mask"]),
    default="box",
    show_default=True,
    help="Each view's foreground as its box or its mask.",
)
@click.option(
    "--input",
    "input_mode",
    type=click.Choice(["pointclip", "clip"]),
    default="pointclip",
    show_default=True,
    help="Depth values into the model: raw, as PointCLIP, or scaled and CLIP-normalised.",
)
@click.option(
    "--projection",
    type=click.Choice(["pointclip", "realistic"]),
    default="pointclip",
    show_default=True,
    help="PointCLIP's six depth maps, or PointCLIP V2's ten realistic projections.",
)
@click.option("--template", default="point cloud depth map of a {}.", show_default=True)
@click.option(
    "--view-weights", default=None, help="Six comma-separated view weights (beta) [default: equal]."
)
@click.option(
    "--search-split",
    default=None,
    help="Search the view weights on this split (a validation split, never the test split).",
)
@click.option("--search-limit", type=int, default=None, help="Only the first N clouds of the search split.")
@click.option(
    "--pictures",
    type=int,
    default=0,
    show_default=True,
    help="Draw the attention on the views of the first N clouds (out/pictures/).",
)
def eval_pointcloud(
    dataset,
    models,
    methods,
    alpha,
    sigma,
    layers,
    form,
    split,
    limit,
    out,
    overwrite,
    preprocess,
    device,
    dtype,
    seed,
    quiet,
    strict,
    root,
    variant,
    points,
    region,
    input_mode,
    template,
    view_weights,
    search_split,
    search_limit,
    pictures,
    projection,
) -> None:
    """3D point-cloud recognition: PointCLIP's six depth views, plain or with FALIP on each view's foreground.

    DATASET: modelnet40 or scanobjectnn (the test split and OBJ_ONLY by default)."""
    from ..datasets.base import strict_data

    with strict_data(strict):
        from ..datasets import open_clouds
        from ..errors import FalipError
        from ..evaluation.pointcloud import run_pointcloud, search_weights
        from ..evaluation.runner import RunConfig
        from ..viz.pointclouds import draw_views

        if search_split is not None and search_split == (split or "test"):
            raise FalipError(
                "the view weights are searched on a validation split, not on the evaluated split "
                f"{search_split!r}"
            )
        data_opts = given_options(root=root, split=split, variant=variant, points=points, seed=seed)
        data = open_clouds(dataset, **data_opts)
        config = RunConfig(
            "pointcloud",
            dataset,
            list(models),
            _list(methods),
            alpha,
            sigma,
            layers,
            form,
            templates=template,
            dtype=dtype,
            seed=seed,
            cloud_region=region,
            cloud_input=input_mode,
            cloud_projection=projection,
            data=data_opts,
        )
        loaded = _loaded(models, device, preprocess, config, dtype)
        if view_weights:
            beta = numbers(view_weights, "--view-weights", 10 if projection == "realistic" else 6)
            config.view_weights = {f"{name}:{method}": beta for name in loaded for method in config.methods}
        elif search_split:
            search = open_clouds(dataset, **{**data_opts, "split": search_split})
            config.view_weights = search_weights(
                loaded, search, config, limit=search_limit, progress=not quiet
            )
            config.data["search_split"] = search_split
            for system, beta in config.view_weights.items():
                click.echo(
                    f"view weights for {system} (searched on {search_split}): "
                    f"{', '.join(f'{b:g}' for b in beta)}"
                )
        summary = run_pointcloud(
            loaded,
            data,
            config,
            Path(out),
            limit=limit,
            overwrite=overwrite,
            progress=not quiet,
            pictures=pictures,
            draw=draw_views,
        )
        _report(summary, out)
        shares = json.loads((Path(out) / "attention.json").read_text())
        for system, share in shares.items():
            click.echo(
                f"[CLS] attention on the foreground (last layer, mean over views), {system}: "
                f"{100 * share:.1f}%"
            )


@eval_group.command("methods")
def eval_methods() -> None:
    """List the region methods, then the relation resolver's (REC only)."""
    from ..tasks.methods import method_names
    from ..tasks.relations import resolver_method_names

    for name in method_names():
        click.echo(name)
    for name in resolver_method_names():
        click.echo(name)
