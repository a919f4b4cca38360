"""`falip eval rec|cls`: run methods and models over a dataset, one example at a time, resumable.

Referring expressions: each image's candidate boxes get one feature per (model, method), reused by
all of the image's expressions; the prediction is the best-scoring box, right when its IoU with a
gold box exceeds the threshold. Scores are CLIP logits (`exp(logit_scale)` x cosine), optionally
minus the mean over negative captions ("subtract", RedCircle's post-processing, the paper's Sec.
3.3.1 after [40]: every distinct expression of the data set is encoded once, and a box's mean score
over its negatives is its score against their mean feature) and combined over every system by an
ensemble (raw logits summed by default, as the authors). Boxes that tie for the best score: the
first of them is the prediction (`ties="first"`, the authors' `np.argmax`), or the tie counts as
the expected accuracy of a random pick among them (`ties="chance"`). Region classification: one
region per image, class features from prompt templates.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import ClsDataset, RecImage, read_image
from ..datasets.base import Skipped
from ..errors import FalipError
from ..inputs import checks
from ..inputs.settings import PAPER, FalipSettings
from ..tasks.classify import TEMPLATE_SETS, class_features, resolve_templates, top_k
from ..tasks.methods import TEMPLATE, get_method, region_features, text_features
from ..tasks.rec import NegativeSampler, ensemble, iou
from ..tasks.relations import DEFAULT_PIPELINE, is_resolved, load_parser, member_methods, resolve
from .distributed import Shard, barrier, current, gather, signal_failure
from .store import ResultStore
from .summary import write_skipped, write_summary

TIE = 1e-6  # scores this close (relative to the best) count as tied under ties="chance"
TIES = ("first", "chance")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class RunConfig:
    """Everything that decides a run's numbers; saved beside the results and checked on resume.
    Result rows are named "<model>:<method>" (and "ensemble")."""

    task: str
    dataset: str
    models: list[str]
    methods: list[str]
    alpha: float = PAPER.alpha
    sigma: float = PAPER.sigma
    layers: list[int] | None = None
    form: str = "cls"
    template: str = TEMPLATE
    templates: str | list[str] = "photo"
    subtract: int = 0  # negative captions per expression (0: off)
    ensemble: str | None = None
    iou: float = 0.5
    ties: str = (
        "first"  # "first": the first best box (the authors' argmax); "chance": a random pick's expectation
    )
    dtype: str = "float32"  # the models' weights and activations; "float16" is the authors' GPU mode
    seed: int = 0
    pasta_scale: float = 0.01
    pasta_heads: str | None = None  # "layer:head,..." (0-based); None: every head of the masked layers
    unleash_layers: list[int] | None = None  # None: the last third (the last 4 of 12)
    unleash_heads: str | None = None  # "layer:head,..."; None: every head of the unleashed layers
    cloud_region: str = "box"  # point clouds: each view's foreground box, or its mask
    cloud_input: str = "pointclip"  # point clouds: raw depths as PointCLIP, or "clip" normalisation
    cloud_projection: str = (
        "pointclip"  # point clouds: PointCLIP's six depth maps, or V2's ten "realistic" views
    )
    view_weights: dict | None = None  # point clouds: {"<model>:<method>": [beta per view]}; None: equal
    spacy_pipeline: str = DEFAULT_PIPELINE  # "reclip" and "<method>+relations": spaCy's English pipeline
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every setting checked once, here, whether it came from the command line or from Python."""
        from ..tasks.rec import ENSEMBLES

        settings = FalipSettings(alpha=self.alpha, sigma=self.sigma, layers=self.layers, form=self.form)
        self.alpha, self.sigma = settings.alpha, settings.sigma
        self.layers = None if settings.layers is None else list(settings.layers)
        self.unleash_layers = checks.layer_list(self.unleash_layers)
        checks.template(self.template, "REC template")
        if not isinstance(self.templates, str) or self.templates not in TEMPLATE_SETS:
            for text in [self.templates] if isinstance(self.templates, str) else self.templates:
                checks.template(text, "class template")
        self.subtract = checks.count("subtract", self.subtract, minimum=0)
        self.iou = checks.fraction("iou", self.iou)
        if self.ties not in TIES:
            raise FalipError(f"unknown tie rule {self.ties!r}; choose one of {', '.join(TIES)}")
        if self.dtype not in DTYPES:
            raise FalipError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.ensemble is not None and self.ensemble not in ENSEMBLES:
            raise FalipError(f"unknown ensemble {self.ensemble!r}; choose one of {', '.join(ENSEMBLES)}")
        self.pasta_scale = checks.positive("pasta scale", self.pasta_scale)
        self.seed = checks.count("seed", self.seed, minimum=0)
        _check_methods(self.methods, resolver=self.task == "rec")  # before any model loads
        if self.task == "rec":
            _check_resolved(self)  # before any model loads: a missing spaCy is one line at once

    def method_options(self) -> dict:
        """The keyword arguments every method receives from `falip.tasks.methods.region_features`:
        FALIP's alpha, sigma, 0-based layers and mask form, and the PASTA / Unleash options (each method
        takes the ones it knows)."""
        return {
            "alpha": self.alpha,
            "sigma": self.sigma,
            "layers": self.layers,
            "form": self.form,
            "pasta_scale": self.pasta_scale,
            "pasta_heads": self.pasta_heads,
            "unleash_layers": self.unleash_layers,
            "unleash_heads": self.unleash_heads,
        }


def _check_methods(methods: Sequence[str], resolver: bool = False) -> None:
    """Every method known; "reclip" and "<method>+relations" only where expressions are resolved."""
    for method in methods:
        if is_resolved(method):
            if not resolver:
                raise FalipError(
                    f"{method!r} resolves referring expressions: it is for `falip eval rec` only"
                )
            member_methods(method)
        else:
            try:
                get_method(method)
            except FalipError as exc:  # its list of the registry's methods, and the resolver's where they run
                if not resolver:
                    raise
                raise FalipError(f"{exc}, reclip, <method>+relations") from None
    if not methods:
        raise FalipError("no method given")


def _check_resolved(config: RunConfig):
    """The spaCy pipeline when a method runs under ReCLIP's resolver (None otherwise), loaded before the
    first example; its probabilities take neither subtract nor an ensemble of logits."""
    resolved = [m for m in config.methods if is_resolved(m)]
    if not resolved:
        return None
    if config.subtract:
        raise FalipError(
            f"--subtract works on logits; {', '.join(resolved)} give the resolver's probabilities"
        )
    if config.ensemble:
        raise FalipError(
            f"--ensemble combines logits; {', '.join(resolved)} give the resolver's probabilities"
        )
    return load_parser(config.spacy_pipeline)


def _check_options(models: dict, config: RunConfig) -> None:
    """Settings that depend on the model (layers, heads) checked before the first example, so that
    a typo stops the run at once instead of being taken for a bad example."""
    from ..inputs.masks import parse_heads, select_heads

    for model in models.values():
        vision = model.backbone.cfg.vision
        for layers, heads in (
            (config.layers, config.pasta_heads),
            (config.unleash_layers, config.unleash_heads),
        ):
            try:
                pairs = parse_heads(heads) if heads else None
                select_heads(model.masked_layers(layers), pairs, vision.layers, vision.heads)
            except ValueError as exc:
                raise FalipError(str(exc)) from None


class _TextCache:
    """Unit text features per (model, method's text rewrite, string): expressions repeat across
    methods, and the negatives of subtract are the data set's expressions, encoded once."""

    def __init__(self, template: str, batch: int = 256):
        self.template = template
        self.batch = batch
        self.cache: dict[tuple, torch.Tensor] = {}

    def __call__(
        self, name: str, model, method: str, texts: Sequence[str], progress: bool = False
    ) -> torch.Tensor:
        rewrite = get_method(method).text
        missing = [t for t in dict.fromkeys(texts) if (name, rewrite, t) not in self.cache]
        starts = range(0, len(missing), self.batch)
        for start in tqdm(
            starts, desc=f"texts ({name})", unit="batch", disable=not progress or len(starts) < 2
        ):
            part = missing[start : start + self.batch]
            for t, f in zip(part, text_features(model, part, self.template, method)):
                self.cache[(name, rewrite, t)] = f
        return torch.stack([self.cache[(name, rewrite, t)] for t in texts])


class _FeatureCache:
    """One image's region features per method, computed once (a resolver method and a plain one may
    share their members)."""

    def __init__(self, model, image, boxes, options: dict):
        self.model, self.image, self.boxes, self.options = model, image, boxes, options
        self.feats: dict[str, torch.Tensor] = {}

    def __call__(self, method: str) -> torch.Tensor:
        if method not in self.feats:
            self.feats[method] = region_features(self.model, self.image, self.boxes, method, **self.options)
        return self.feats[method]


def _resolved_scores(method, expressions, boxes, features, scale, texts, nlp) -> torch.Tensor:
    """(R, E) probabilities of ReCLIP's resolver, each text scored by the member methods' summed logits."""
    members = member_methods(method)

    def score(text: str) -> torch.Tensor:
        return sum(scale * features(m) @ texts(m, [text])[0] for m in members)

    columns = [torch.as_tensor(resolve(e, boxes, score, nlp).probs, dtype=torch.float32) for e in expressions]
    return torch.stack(columns, dim=1)


def _hits(
    scores: torch.Tensor, boxes: Sequence, gold: Sequence, threshold: float, ties: str = "first"
) -> tuple[int, float]:
    """The predicted box (the first of the best, as `argmax`) and whether it is right (IoU with a gold
    box above `threshold`): 1 or 0 with `ties="first"` (the authors' `np.argmax(probs)`, pumpkin805/FALIP
    methods/baseline.py); with `ties="chance"` the share of the best boxes (within `TIE`) that hit a gold
    box, the expected accuracy of breaking the tie at random."""
    pred = int(scores.argmax())
    if ties == "first":
        return pred, float(any(iou(boxes[pred], g) > threshold for g in gold))
    best = scores.max()
    tied = (scores >= best - TIE * max(1.0, abs(best.item()))).nonzero().flatten().tolist()
    right = [any(iou(boxes[i], g) > threshold for g in gold) for i in tied]
    return pred, sum(right) / len(right)


def candidate_boxes(item: RecImage, image) -> list:
    """An image's candidate boxes (`xywh`); with proposals but none for this image, the whole decoded
    image as the one candidate (ReCLIP's and the FALIP authors' `main.py`: `Box(0, 0, img.width,
    img.height)`), so the image's expressions are counted as theirs are. Raises FalipError when there
    is no candidate at all."""
    if item.boxes:
        return item.boxes
    if item.whole_image_fallback:
        height, width = (
            (image.height, image.width) if hasattr(image, "height") else np.asarray(image).shape[:2]
        )
        return [[0.0, 0.0, float(width), float(height)]]
    raise FalipError("no candidate boxes")


def _device_of(models: dict) -> str:
    return next(iter(models.values())).device.type if models else "cpu"


def prefetch(items: Sequence, load, depth: int = 2):
    """(item, future of `load(item)`) pairs, the next `depth` items' loads running in a thread while
    the current one computes (decoding images overlaps the model's work); a load's error comes out of
    `future.result()`, where the caller handles it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="falip-prefetch") as pool:
        futures = [pool.submit(load, item) for item in items[:depth]]
        for index, item in enumerate(items):
            if index + depth < len(items):
                futures.append(pool.submit(load, items[index + depth]))
            yield item, futures[index]
            futures[index] = None  # let the image go


def _announce(shard: Shard, count: int, what: str) -> None:
    if shard.world > 1:
        print(f"rank {shard.rank} of {shard.world}: {count} {what}", file=sys.stderr, flush=True)


def _some_image_exists(sources: Sequence) -> None:
    """Stop before scoring when not one of the image files to score exists (a data set pointed at the
    wrong folder: COCO 2017 for refer's COCO_train2014_ names), naming the folders looked in.

    Raises:
        FalipError: every source is a file path and none of them exists."""
    files = [Path(s) for s in sources if not callable(s)]
    if not files or len(files) < len(sources) or any(f.is_file() for f in files):
        return
    folders = sorted({str(f.parent) for f in files})
    where = ", ".join(folders[:3]) + (f" and {len(folders) - 3} more folders" if len(folders) > 3 else "")
    raise FalipError(
        f"none of the {len(files)} images to score was found: looked in {where} (e.g. {files[0].name}); "
        "is the image folder the one the annotations name?"
    )


def _finish(store: ResultStore, order: list[str], out: Path, skipped: Sequence[str]) -> dict:
    """Merge every rank's records (rank 0), write the summary once, and return it on every rank.

    Raises:
        FalipError: nothing was scored (every example skipped): no summary is written, only
            `skipped.json`, and the run fails with one line instead of reporting an empty table."""
    records = store.finish(order)
    every_skip = gather(store.shard, list(skipped))
    if not records:
        if store.shard.main:
            write_skipped(out, every_skip)
        barrier(store.shard)
        first = f" (e.g. {every_skip[0]})" if store.shard.main and every_skip else ""
        listed = Path(out) / "skipped.json"
        raise FalipError(f"nothing was scored: every example was skipped, each named in {listed}{first}")
    if store.shard.main:
        summary = write_summary(out, records, every_skip)
    barrier(store.shard)
    if not store.shard.main:
        summary = json.loads((Path(out) / "summary.json").read_text())
    return summary


def negative_seed(seed: int, key: str) -> int:
    """The seed of an expression's negatives: the run's seed plus a hash of the expression's key."""
    return seed + zlib.crc32(key.encode())


def run_rec(
    models: dict,
    images: Sequence[RecImage],
    config: RunConfig,
    out: Path,
    *,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Evaluate every (model, method) on the images' expressions; returns the summary.

    A method "reclip" or "<method>+relations" runs ReCLIP's relation resolver (`tasks.relations`) over
    its member methods' summed logits; its scores are the resolver's probabilities over the boxes.

    Args:
        models: name -> `FalipModel`; rows of the results are "<model>:<method>" (and "ensemble").
        images: the data set (`falip.datasets.open_rec`); boxes and gold boxes xywh, in pixels.
        config: the run's settings, saved in `out` and compared on resume.
        out: the results folder (results.jsonl, config.json, summary.json/.csv/.md, skipped.json).
        limit: evaluate only the first `limit` expressions (None: all).
        overwrite: start again in a folder that holds another run.
        progress: show a tqdm bar.
    Returns:
        The summary (`falip.evaluation.summary.write_summary`): {system: {metric: accuracy}}. An image that
        cannot be read or has no boxes is skipped, named in skipped.json, and counted.
    Raises:
        FalipError: layers or heads the models do not have, a bad `limit`, an
            `out` holding a run with other settings (without `overwrite`), a folder that cannot be
            written, or (resolver methods) spaCy or its pipeline missing, subtract or an ensemble.
    """
    _check_options(models, config)
    nlp = _check_resolved(config)
    limit = checks.optional_count("limit", limit)
    shard = current(_device_of(models))
    store = ResultStore(out, asdict(config), overwrite, shard)
    try:
        done = store.done
        todo = [e for item in images for e in item.expressions][:limit]
        mine = [item for index, item in enumerate(images) if shard.mine(index)]
        mine_keys = {e.key for item in mine for e in item.expressions}
        wanted = {e.key for e in todo} - done
        skipped = Skipped(getattr(images, "skipped", []) if shard.main else [])
        texts = _TextCache(config.template)
        pools: dict[tuple, torch.Tensor] = {}
        sampler = (
            NegativeSampler([e.text for item in images for e in item.expressions])
            if config.subtract and wanted
            else None
        )
        _announce(shard, len(mine), "images")
        total = sum(1 for e in todo if e.key in mine_keys)
        bar = tqdm(
            total=total,
            initial=total - len(wanted & mine_keys),
            desc="expressions",
            disable=not progress,
            unit="expr",
        )
        try:
            _some_image_exists(
                [item.image for item in images if any(e.key in wanted for e in item.expressions)]
            )
            todo_images = [item for item in mine if any(e.key in wanted for e in item.expressions)]
            for item, loading in prefetch(todo_images, lambda it: read_image(it.image, it.size)):
                exprs = [e for e in item.expressions if e.key in wanted]
                try:
                    image = loading.result()
                    boxes = candidate_boxes(item, image)
                    own = [e.text for e in item.expressions]
                    negatives = (
                        [
                            sampler.sample(own, config.subtract, negative_seed(config.seed, e.key))
                            for e in exprs
                        ]
                        if sampler
                        else None
                    )
                    all_scores = {}
                    for name, model in models.items():
                        scale = model.backbone.logit_scale.float().exp().item()
                        features = _FeatureCache(model, image, boxes, config.method_options())
                        for method in config.methods:
                            if is_resolved(method):
                                all_scores[f"{name}:{method}"] = _resolved_scores(
                                    method,
                                    [e.text for e in exprs],
                                    boxes,
                                    features,
                                    scale,
                                    lambda m, t, name=name, model=model: texts(name, model, m, t),
                                    nlp,
                                )
                                continue
                            feats = features(method)
                            scores = (
                                scale * feats @ texts(name, model, method, [e.text for e in exprs]).T
                            )  # (R, E)
                            if negatives:
                                pool_key = (name, get_method(method).text)
                                if (
                                    pool_key not in pools
                                ):  # (P, D): each distinct expression, once per model and text rewrite
                                    pools[pool_key] = texts(
                                        name, model, method, sampler.texts, progress=progress
                                    )
                                pool = pools[pool_key]
                                mean_negative = torch.stack(
                                    [pool[torch.as_tensor(n)].mean(0) for n in negatives]
                                )  # (E, D)
                                scores = scores - scale * feats @ mean_negative.T
                            all_scores[f"{name}:{method}"] = scores
                except FalipError as exc:  # a bad image or box: this image is left out, named, and counted
                    skipped.add(
                        f"image {item.key} ({item.image if not callable(item.image) else 'generated'}): {exc}"
                    )
                    bar.update(len(exprs))
                    continue
                if config.ensemble:
                    all_scores["ensemble"] = ensemble(list(all_scores.values()), config.ensemble)
                records = []
                for j, expr in enumerate(exprs):
                    results = {}
                    for system, scores in all_scores.items():
                        pred, correct = _hits(scores[:, j], boxes, expr.gold, config.iou, config.ties)
                        results[system] = {"pred": pred, "correct": correct}
                    record = {"key": expr.key, "image": item.key, "text": expr.text, "results": results}
                    if getattr(expr, "group", None) is not None:
                        record["group"] = expr.group
                    if negatives:  # how many the pool really gave: fewer than asked when it holds fewer
                        record["negatives"] = {"asked": config.subtract, "used": len(negatives[j])}
                    records.append(record)
                store.add(records)
                bar.update(len(records))
        except BaseException:
            signal_failure(shard)
            raise
        bar.close()
        return _finish(store, [e.key for item in images for e in item.expressions], out, skipped)
    finally:
        store.close()


def run_cls(
    models: dict,
    data: ClsDataset,
    config: RunConfig,
    out: Path,
    *,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Top-1 and top-5 region classification for every (model, method); returns the summary.

    Arguments, result folder and errors as `run_rec`, with `data` from `falip.datasets.open_cls` (one
    region per example) and class features from `config.templates`; an unknown template set or a bad
    template also raises FalipError.
    """
    _check_options(models, config)
    limit = checks.optional_count("limit", limit)
    resolve_templates(config.templates)
    shard = current(_device_of(models))
    store = ResultStore(out, asdict(config), overwrite, shard)
    try:
        done = store.done
        examples = [
            e for index, e in enumerate(data.examples[:limit]) if e.key not in done and shard.mine(index)
        ]
        classes = {
            (name, method): class_features(model, data.classes, config.templates, method)
            for name, model in models.items()
            for method in config.methods
        }
        skipped = Skipped(data.skipped if shard.main else [])
        _announce(shard, len(examples), "examples")
        try:
            _some_image_exists([e.image for e in data.examples[:limit] if e.key not in done])
            loads = prefetch(examples, lambda ex: read_image(ex.image, ex.size))
            for example, loading in tqdm(
                loads, total=len(examples), desc="images", disable=not progress, unit="img"
            ):
                results = {}
                try:
                    image = loading.result()
                    region = example.load_region()
                    for name, model in models.items():
                        for method in config.methods:
                            feats = region_features(model, image, [region], method, **config.method_options())
                            scores = feats @ classes[(name, method)].T
                            hits = top_k(scores, [example.label])
                            results[f"{name}:{method}"] = {
                                "pred": int(scores.argmax()),
                                "top1": bool(hits[1][0]),
                                "top5": bool(hits[5][0]),
                            }
                except (
                    FalipError
                ) as exc:  # a bad image, box or mask: this example is left out, named, and counted
                    skipped.add(
                        f"example {example.key} "
                        f"({example.image if not callable(example.image) else 'generated'}): {exc}"
                    )
                    continue
                store.add(
                    [{"key": example.key, "label": example.label, "group": example.group, "results": results}]
                )
        except BaseException:
            signal_failure(shard)
            raise
        return _finish(store, [e.key for e in data.examples], out, skipped)
    finally:
        store.close()
