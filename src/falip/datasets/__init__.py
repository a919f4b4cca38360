"""Dataset loaders by name, for `falip eval rec|cls` and the Python API.

A loader is a function whose keyword parameters are the CLI's options (`annotations`, `images`,
`root`, `split`, ...); adding a dataset is a loader plus an entry here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..errors import FalipError, spelled
from .base import ClsDataset, ClsExample, RecExpression, RecImage, read_image
from .classification import load_cub, load_dogs, load_imagenet_s, load_waterbirds
from .pointclouds import CLOUD_DATASETS, CloudDataset, CloudExample
from .refcoco import load_reclip, load_refer, load_transvg
from .scenes import scene_cls, scene_rec

REC_DATASETS: dict[str, Callable[..., list[RecImage]]] = {
    "reclip": load_reclip,
    "refer": load_refer,
    "transvg": load_transvg,
    "scenes": scene_rec,
}
CLS_DATASETS: dict[str, Callable[..., ClsDataset]] = {
    "cub": load_cub,
    "dogs": load_dogs,
    "waterbirds": load_waterbirds,
    "imagenet-s": load_imagenet_s,
    "scenes": scene_cls,
}


def _open(registry: dict[str, Callable], task: str, name: str, options: dict[str, Any]):
    if name not in registry:
        raise FalipError(f"unknown {task} dataset {name!r}; choose one of {', '.join(registry)}")
    loader = registry[name]
    params = inspect.signature(loader).parameters
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - set(params))
    if extra:
        raise FalipError(
            f"{name} does not take {', '.join(spelled(e) for e in extra)}; it takes "
            + ", ".join(spelled(p) for p in params)
        )
    missing = [p for p, spec in params.items() if spec.default is inspect.Parameter.empty and p not in given]
    if missing:
        raise FalipError(f"{name} needs {', '.join(spelled(m) for m in missing)}")
    return loader(**given)


def default_splits(registry: dict[str, Callable]) -> dict[str, str | None]:
    """Each data set's default `split` as its loader declares it (None: the split must be given); data
    sets whose loader takes no split (the annotation file is the split) are left out."""
    out = {}
    for name, loader in registry.items():
        param = inspect.signature(loader).parameters.get("split")
        if param is not None:
            out[name] = None if param.default is inspect.Parameter.empty else param.default
    return out


def open_rec(name: str, **options) -> list[RecImage]:
    """A referring-expression data set by name (a key of `REC_DATASETS`), loaded with `options`.

    Options set to None are dropped (a CLI option left out), the rest are passed by name to the loader.

    Raises:
        FalipError: an unknown name, an option the loader does not take, a required one missing, or
            whatever the loader refuses (missing files, bad annotations).
    """
    return _open(REC_DATASETS, "referring-expression", name, options)


def open_cls(name: str, **options) -> ClsDataset:
    """A region-classification data set by name (a key of `CLS_DATASETS`); as `open_rec`, same errors."""
    return _open(CLS_DATASETS, "classification", name, options)


def open_clouds(name: str, **options) -> CloudDataset:
    """A point-cloud data set by name (a key of `CLOUD_DATASETS`); as `open_rec`, same errors."""
    return _open(CLOUD_DATASETS, "point-cloud", name, options)


__all__ = [
    "REC_DATASETS",
    "CLS_DATASETS",
    "CLOUD_DATASETS",
    "default_splits",
    "open_rec",
    "open_cls",
    "open_clouds",
    "RecImage",
    "RecExpression",
    "ClsDataset",
    "ClsExample",
    "CloudDataset",
    "CloudExample",
    "read_image",
]
