"""Point-cloud data sets of the paper's Table 3: ModelNet40 (both layouts people have it in) and
ScanObjectNN. Each loader checks its folder and names exactly what is missing.

- ModelNet40, `modelnet40_normal_resampled`: `<class>/<class>_NNNN.txt` (x, y, z, nx, ny, nz per
  line), `modelnet40_shape_names.txt`, split lists `modelnet40_<split>.txt`;
- ModelNet40, `modelnet40_ply_hdf5_2048`: `ply_data_<split>N.h5` (`data` (N, 2048, 3), `label`),
  listed in `<split>_files.txt` (by paths whose last part is the file name), `shape_names.txt`;
- ScanObjectNN, `h5_files/`: `main_split_nobg/<split>_objectdataset.h5` (OBJ_ONLY),
  `main_split/<split>_objectdataset.h5` (OBJ_BG), `main_split/<split>_objectdataset_augmentedrot_scale75.h5`
  (PB_T50_RS), each with `data` and `label`.

How a cloud becomes the `points` (1024 by default) that are projected:

- the HDF5 releases (ModelNet40 `ply_hdf5_2048`, ScanObjectNN): each cloud's first `points` points,
  as stored, no re-normalisation: PointCLIP's loader (ZrrSkywalker/PointCLIP `datasets/modelnet40.py`
  reads `data`; Dassl3D's `data_manager.py` takes `item.impath[:1024]`); the releases are already
  centred and scaled;
- the text release (`modelnet40_normal_resampled`, 10,000 points a shape): ours, as PointCLIP never
  reads it: 1024 points drawn at random (seeded per cloud, without replacement, or with it when a
  cloud has fewer), then centred and scaled into the unit sphere (PointNet's `pc_normalize`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FalipError
from ..inputs.files import lines
from ..tasks.projection import normalise_cloud
from .base import require, require_folder

SCANOBJECTNN_CLASSES = (
    "bag",
    "bin",
    "box",
    "cabinet",
    "chair",
    "desk",
    "display",
    "door",
    "shelf",
    "table",
    "bed",
    "pillow",
    "sink",
    "sofa",
    "toilet",
)
SCANOBJECTNN_FILES = {
    "obj_only": "main_split_nobg/{split}_objectdataset.h5",
    "obj_bg": "main_split/{split}_objectdataset.h5",
    "pb_t50_rs": "main_split/{split}_objectdataset_augmentedrot_scale75.h5",
}
POINTS = 1024


@dataclass
class CloudExample:
    """One point cloud: its stable `key`, a loader of the raw (N, >=3) array, and its class index `label`."""

    key: str
    load: Callable[[], np.ndarray]  # the raw cloud (N, >=3)
    label: int


SAMPLINGS = ("first", "random")


@dataclass
class CloudDataset:
    """`sampling`: "first" (the first `points` points as stored, PointCLIP's) or "random" (seeded, ours);
    `normalise`: centre and scale into the unit sphere after sampling (ours, for the text release)."""

    classes: list[str]
    examples: list[CloudExample]
    points: int = POINTS
    seed: int = 0
    sampling: str = "random"
    normalise: bool = True

    def cloud(self, example: CloudExample) -> np.ndarray:
        """The example's cloud as projected: (points, 3), or fewer when "first" meets a shorter cloud."""
        raw = example.load()
        if self.sampling == "first":
            return first_points(raw, self.points, self.normalise)
        return sample_cloud(raw, self.points, self.seed + zlib.crc32(example.key.encode()), self.normalise)


def first_points(points: np.ndarray, count: int, normalise: bool = False) -> np.ndarray:
    """The first `count` points (x, y, z) as stored (PointCLIP: `pointcloud = item.impath[:1024]`),
    optionally normalised; a cloud with fewer keeps all of them, as PointCLIP's slice does."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] < 3 or len(points) == 0:
        raise FalipError(f"a point cloud must be (N, 3) or wider with N > 0, got shape {points.shape}")
    chosen = points[:count, :3]
    return normalise_cloud(chosen) if normalise else chosen


def sample_cloud(points: np.ndarray, count: int, seed: int, normalise: bool = True) -> np.ndarray:
    """`count` points drawn at random (seeded; with replacement only when the cloud has fewer), then
    centred and scaled into the unit sphere unless `normalise` is False (ours: the text release)."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] < 3 or len(points) == 0:
        raise FalipError(f"a point cloud must be (N, 3) or wider with N > 0, got shape {points.shape}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(points), size=count, replace=len(points) < count)
    return normalise_cloud(points[chosen, :3]) if normalise else points[chosen, :3]


def _names(path: Path) -> list[str]:
    return [line.strip() for line in lines(require(path, "class-name list").read_text()) if line.strip()]


def _h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return np.asarray(handle["data"][:], np.float32), np.asarray(handle["label"][:]).reshape(
                -1
            ).astype(np.int64)
    except (OSError, KeyError) as exc:
        raise FalipError(f"{path}: not a point-cloud HDF5 file with `data` and `label` ({exc})") from None


def _h5_examples(arrays: list[tuple[str, np.ndarray, np.ndarray]], classes: list[str]) -> list[CloudExample]:
    examples = []
    for name, data, labels in arrays:
        if len(data) != len(labels):
            raise FalipError(f"{name}: {len(data)} clouds but {len(labels)} labels")
        for i, (cloud, label) in enumerate(zip(data, labels)):
            if not 0 <= label < len(classes):
                raise FalipError(f"{name}: cloud {i} has label {label}, but there are {len(classes)} classes")
            examples.append(CloudExample(f"{name}:{i}", (lambda c=cloud: c), int(label)))
    return examples


def load_modelnet40(root: Path, split: str = "test", points: int = POINTS, seed: int = 0) -> CloudDataset:
    """ModelNet40 in either layout, detected from the folder."""
    root = require_folder(Path(root), "ModelNet40 folder")
    if (root / "modelnet40_shape_names.txt").is_file():
        classes = _names(root / "modelnet40_shape_names.txt")
        listing = require(
            root / f"modelnet40_{split}.txt",
            f"ModelNet40 split list for {split!r}",
            "modelnet40_normal_resampled names its splits modelnet40_<split>.txt",
        )
        index = {name: i for i, name in enumerate(classes)}
        examples = []
        for number, line in enumerate(lines(listing.read_text()), 1):
            name = line.strip()
            if not name:
                continue
            label = name.rsplit("_", 1)[0]
            if label not in index:
                raise FalipError(f"{listing}:{number}: {name!r} names no class of modelnet40_shape_names.txt")
            path = require(root / label / f"{name}.txt", "ModelNet40 shape file")
            examples.append(
                CloudExample(
                    name, (lambda p=path: np.loadtxt(p, delimiter=",", dtype=np.float32)), index[label]
                )
            )
        return CloudDataset(classes, examples, points, seed)
    if (root / "shape_names.txt").is_file():
        classes = _names(root / "shape_names.txt")
        listing = require(
            root / f"{split}_files.txt",
            f"ModelNet40 HDF5 file list for {split!r}",
            "modelnet40_ply_hdf5_2048 lists its files in <split>_files.txt",
        )
        files = [root / Path(line.strip()).name for line in lines(listing.read_text()) if line.strip()]
        arrays = [(f.name, *_h5(require(f, "ModelNet40 HDF5 file"))) for f in files]
        return CloudDataset(classes, _h5_examples(arrays, classes), points, seed, "first", normalise=False)
    raise FalipError(
        f"{root} is not a ModelNet40 folder: expected modelnet40_shape_names.txt "
        "(modelnet40_normal_resampled) "
        "or shape_names.txt (modelnet40_ply_hdf5_2048)"
    )


def load_scanobjectnn(
    root: Path, split: str = "test", variant: str = "obj_only", points: int = POINTS, seed: int = 0
) -> CloudDataset:
    """ScanObjectNN's `h5_files` folder (or the folder holding it); `variant` obj_only, obj_bg or
    pb_t50_rs."""
    if variant not in SCANOBJECTNN_FILES:
        raise FalipError(
            f"unknown ScanObjectNN variant {variant!r}; choose one of {', '.join(SCANOBJECTNN_FILES)}"
        )
    root = require_folder(Path(root), "ScanObjectNN folder")
    if (root / "h5_files").is_dir():
        root = root / "h5_files"
    path = require(
        root / SCANOBJECTNN_FILES[variant].format(split=split), f"ScanObjectNN {variant} {split} file"
    )
    data, labels = _h5(path)
    return CloudDataset(
        list(SCANOBJECTNN_CLASSES),
        _h5_examples([(path.name, data, labels)], list(SCANOBJECTNN_CLASSES)),
        points,
        seed,
        "first",
        normalise=False,
    )


CLOUD_DATASETS = {"modelnet40": load_modelnet40, "scanobjectnn": load_scanobjectnn}
