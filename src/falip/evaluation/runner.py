"""`falip eval rec|cls`: run methods and models over a dataset, one example at a time, resumable.

Referring expressions: each image's candidate boxes get one feature per (model, method), reused by
all of the image's expressions; the prediction is the best-scoring box, right when its IoU with a
gold box exceeds the threshold. Scores are CLIP logits (`exp(logit_scale)` x cosine), optionally
minus the mean over negative captions ("subtract", ReCLIP) and combined over every system by an
ensemble. Region classification: one region per image, class features from prompt templates.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from ..datasets import ClsDataset, RecImage, read_image
from ..errors import FalipError
from ..tasks.classify import class_features, resolve_templates, top_k
from ..tasks.methods import TEMPLATE, get_method, region_features, text_features
from ..tasks.rec import ensemble, iou, sample_negatives, subtract
from .store import ResultStore
from .summary import write_summary

TIE = 1e-6  # scores this close count as tied: the expected accuracy of a random pick is recorded


@dataclass
class RunConfig:
    """Everything that decides a run's numbers; saved beside the results and checked on resume.
    Result rows are named "<model>:<method>" (and "ensemble")."""

    task: str
    dataset: str
    models: list[str]
    methods: list[str]
    alpha: float = 0.2
    sigma: float = 100.0
    layers: Optional[list[int]] = None
    form: str = "cls"
    template: str = TEMPLATE
    templates: str | list[str] = "photo"
    subtract: int = 0
    ensemble: Optional[str] = None
    iou: float = 0.5
    seed: int = 0
    data: dict = field(default_factory=dict)

    def falip_options(self) -> dict:
        return {"alpha": self.alpha, "sigma": self.sigma, "layers": self.layers, "form": self.form}


def _check_methods(methods: Sequence[str]) -> None:
    for method in methods:
        get_method(method)
    if not methods:
        raise FalipError("no method given")


class _TextCache:
    """Unit text features per (model, method, string): negatives repeat across expressions."""

    def __init__(self, template: str):
        self.template = template
        self.cache: dict[tuple[str, str, str], torch.Tensor] = {}

    def __call__(self, name: str, model, method: str, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if (name, method, t) not in self.cache]
        if missing:
            for t, f in zip(missing, text_features(model, missing, self.template, method)):
                self.cache[(name, method, t)] = f
        return torch.stack([self.cache[(name, method, t)] for t in texts])


def _hits(scores: torch.Tensor, boxes: Sequence, gold: Sequence, threshold: float) -> tuple[int, float]:
    """Predicted box and the share of tied best boxes that hit a gold box."""
    best = scores.max()
    tied = (scores >= best - TIE * max(1.0, abs(best.item()))).nonzero().flatten().tolist()
    right = [any(iou(boxes[i], g) > threshold for g in gold) for i in tied]
    return int(scores.argmax()), sum(right) / len(right)


def run_rec(models: dict, images: Sequence[RecImage], config: RunConfig, out: Path, *, limit: Optional[int] = None,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Evaluate every (model, method) on the images' expressions; returns the summary."""
    _check_methods(config.methods)
    store = ResultStore(out, asdict(config), overwrite)
    done = store.done
    pool = [e.text for item in images for e in item.expressions]
    todo = [e for item in images for e in item.expressions][:limit]
    wanted = {e.key for e in todo} - done
    texts = _TextCache(config.template)
    bar = tqdm(total=len(todo), initial=len(todo) - len(wanted), desc="expressions", disable=not progress, unit="expr")
    for item in images:
        exprs = [e for e in item.expressions if e.key in wanted]
        if not exprs:
            continue
        if not item.boxes:
            raise FalipError(f"image {item.key} has no candidate boxes")
        image = read_image(item.image)
        own = [e.text for e in item.expressions]
        negatives = [sample_negatives(pool, own, config.subtract, config.seed + zlib.crc32(e.key.encode())) for e in exprs] if config.subtract else None
        all_scores = {}
        for name, model in models.items():
            scale = model.backbone.logit_scale.float().exp().item()
            for method in config.methods:
                feats = region_features(model, image, item.boxes, method, **config.falip_options())
                scores = scale * feats @ texts(name, model, method, [e.text for e in exprs]).T  # (R, E)
                if negatives:
                    neg = torch.stack([scale * feats @ texts(name, model, method, n).T for n in negatives], dim=1)  # (R, E, N)
                    scores = subtract(scores, neg)
                all_scores[f"{name}:{method}"] = scores
        if config.ensemble:
            all_scores["ensemble"] = ensemble(list(all_scores.values()), config.ensemble)
        records = []
        for j, expr in enumerate(exprs):
            results = {}
            for system, scores in all_scores.items():
                pred, correct = _hits(scores[:, j], item.boxes, expr.gold, config.iou)
                results[system] = {"pred": pred, "correct": correct}
            record = {"key": expr.key, "image": item.key, "text": expr.text, "results": results}
            if negatives:
                record["negatives"] = negatives[j]
            records.append(record)
        store.add(records)
        bar.update(len(records))
    bar.close()
    return write_summary(out, store.records)


def run_cls(models: dict, data: ClsDataset, config: RunConfig, out: Path, *, limit: Optional[int] = None,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Top-1 and top-5 region classification for every (model, method)."""
    _check_methods(config.methods)
    resolve_templates(config.templates)
    store = ResultStore(out, asdict(config), overwrite)
    done = store.done
    examples = [e for e in data.examples[:limit] if e.key not in done]
    classes = {
        (name, method): class_features(model, data.classes, config.templates, method)
        for name, model in models.items()
        for method in config.methods
    }
    for example in tqdm(examples, desc="images", disable=not progress, unit="img"):
        image = read_image(example.image)
        region = example.load_region()
        results = {}
        for name, model in models.items():
            for method in config.methods:
                feats = region_features(model, image, [region], method, **config.falip_options())
                scores = feats @ classes[(name, method)].T
                hits = top_k(scores, [example.label])
                results[f"{name}:{method}"] = {"pred": int(scores.argmax()), "top1": bool(hits[1][0]), "top5": bool(hits[5][0])}
        store.add([{"key": example.key, "label": example.label, "group": example.group, "results": results}])
    return write_summary(out, store.records)
