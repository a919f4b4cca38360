"""Region-prompted classification data: CUB-200-2011, Stanford Dogs, Waterbirds, ImageNet-S.

Each loader reads the dataset's own published layout and returns a `ClsDataset` (one region per
image: the object's box; ImageNet-S's mask or, by default, its box). Class names are made readable
("001.Black_footed_Albatross" -> "Black footed Albatross"); ImageNet-S's WordNet ids are named from
the shipped `imagenet_classnames.tsv` (CLIP's zero-shot ImageNet class names).
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import FalipError
from .base import ClsDataset, ClsExample, Skipped, read_table, require, require_folder

CUB_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "bounding_boxes.txt",
    "train_test_split.txt",
    "classes.txt",
)


def _readable(folder_name: str) -> str:
    """`001.Black_footed_Albatross` / `n02085620-Chihuahua` -> `Black footed Albatross` / `Chihuahua`."""
    name = folder_name.split(".", 1)[1] if "." in folder_name[:5] else folder_name
    if name[:1] == "n" and "-" in name and name.split("-", 1)[0][1:].isdigit():
        name = name.split("-", 1)[1]
    return name.replace("_", " ")


def _cub_tables(root: Path, skipped: Skipped) -> dict:
    for name in CUB_FILES:
        require(root / name, f"CUB-200-2011 file {name}", "the official CUB_200_2011 folder")
    images = dict(read_table(root / "images.txt", 2, skipped))
    boxes = {
        i: list(map(float, (x, y, w, h)))
        for i, x, y, w, h in read_table(root / "bounding_boxes.txt", 5, skipped, (1, 2, 3, 4))
    }
    labels = dict(read_table(root / "image_class_labels.txt", 2, skipped))
    is_train = dict(read_table(root / "train_test_split.txt", 2, skipped))
    classes = sorted(((int(i), n) for i, n in read_table(root / "classes.txt", 2, numeric=(0,))))
    return {"images": images, "boxes": boxes, "labels": labels, "is_train": is_train, "classes": classes}


def load_cub(root: Path, split: str = "test") -> ClsDataset:
    """CUB-200-2011 (`CUB_200_2011/`): the bird's box per image; split "test", "train" or "all".
    An image with a bad or missing box, label or split entry is skipped and named (`--strict`: an error)."""
    root = require_folder(Path(root), "CUB folder", "CUB_200_2011, with images.txt")
    if split not in ("test", "train", "all"):
        raise FalipError(f"unknown CUB split {split!r}; choose test, train or all")
    skipped = Skipped()
    t = _cub_tables(root, skipped)
    index = {str(i): k for k, (i, _) in enumerate(t["classes"])}
    examples = []
    for image_id, rel in t["images"].items():
        missing = [
            name
            for name, table in (
                ("bounding_boxes.txt", "boxes"),
                ("image_class_labels.txt", "labels"),
                ("train_test_split.txt", "is_train"),
            )
            if image_id not in t[table]
        ]
        if missing:
            skipped.add(f"{root}: image {image_id} ({rel}) has no line in {', '.join(missing)}")
            continue
        if t["labels"][image_id] not in index:
            skipped.add(
                f"{root / 'image_class_labels.txt'}: image {image_id} has label {t['labels'][image_id]}, "
                "which classes.txt lacks"
            )
            continue
        if split != "all" and (t["is_train"][image_id] == "1") != (split == "train"):
            continue
        examples.append(
            ClsExample(
                image_id,
                require(root / "images" / rel, "CUB image"),
                t["boxes"][image_id],
                index[t["labels"][image_id]],
            )
        )
    return ClsDataset([_readable(n) for _, n in t["classes"]], examples, skipped)


def _dogs_split(root: Path, split: str) -> set[str] | None:
    if split == "all":
        return None
    for candidate in (root / f"{split}_list.mat", root / "lists" / f"{split}_list.mat"):
        if candidate.is_file():
            from scipy.io import loadmat

            files = loadmat(candidate)["file_list"]
            return {str(np.asarray(f).reshape(-1)[0]) for f in files.reshape(-1)}
    raise FalipError(
        f"Stanford Dogs split list {split}_list.mat not found in {root} or {root / 'lists'} (or use split "
        "'all')"
    )


def load_dogs(root: Path, split: str = "test") -> ClsDataset:
    """Stanford Dogs: `Images/<wnid>-<breed>/*.jpg`, `Annotation/<wnid>-<breed>/<file>` (VOC XML
    boxes), split lists `test_list.mat`/`train_list.mat`; the first object's box is the region."""
    root = require_folder(Path(root), "Stanford Dogs folder", "with Images/ and Annotation/")
    images_dir = require(root / "Images", "Stanford Dogs image folder Images/")
    notes_dir = require(root / "Annotation", "Stanford Dogs annotation folder Annotation/")
    wanted = _dogs_split(root, split)
    folders = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
    examples, skipped = [], Skipped()
    for label, folder in enumerate(folders):
        for image in sorted((images_dir / folder).glob("*.jpg")):
            rel = f"{folder}/{image.name}"
            if wanted is not None and rel not in wanted:
                continue
            note = notes_dir / folder / image.stem
            if not note.is_file():
                skipped.add(f"{note}: no annotation for {rel}")
                continue
            try:
                root_node = ET.parse(note).getroot()
                box = root_node.find("object/bndbox")
                x0, y0, x1, y1 = (float(box.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
            except (ET.ParseError, AttributeError, TypeError, ValueError):
                skipped.add(f"{note}: not a VOC annotation with an object box")
                continue
            examples.append(
                ClsExample(rel, image, [x0, y0, x1 - x0, y1 - y0], label, size=_voc_size(root_node))
            )
    return ClsDataset([_readable(f) for f in folders], examples, skipped)


def _voc_size(root) -> tuple[int, int] | None:
    """The image's (width, height) a VOC annotation gives in `<size>`, checked when the image is decoded
    (`datasets.base.read_image`); None when it gives none."""
    try:
        size = int(root.find("size/width").text), int(root.find("size/height").text)
    except (AttributeError, TypeError, ValueError):
        return None
    return size if min(size) > 0 else None


WATERBIRDS_SPLITS = {"train": "0", "val": "1", "test": "2"}


def load_waterbirds(root: Path, cub_root: Path, split: str = "test") -> ClsDataset:
    """Waterbirds (`metadata.csv`: img_filename, y, split, place). The images are CUB birds pasted at
    their CUB position, so the region is the CUB box of the same file (`cub_root`). Classes:
    landbird (y=0), waterbird (y=1); the group is (bird, place) for worst-group accuracy."""
    root = require_folder(Path(root), "Waterbirds folder", "with metadata.csv")
    if split not in WATERBIRDS_SPLITS:
        raise FalipError(f"unknown Waterbirds split {split!r}; choose {', '.join(WATERBIRDS_SPLITS)}")
    meta = require(root / "metadata.csv", "Waterbirds metadata.csv")
    skipped = Skipped()
    t = _cub_tables(require_folder(Path(cub_root), "CUB folder", "CUB_200_2011, for the boxes"), skipped)
    box_of = {rel: t["boxes"][i] for i, rel in t["images"].items() if i in t["boxes"]}
    examples = []
    with open(meta, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"img_filename", "y", "split", "place"} - set(reader.fieldnames or [])
        if missing:
            raise FalipError(f"{meta}: no column {', '.join(sorted(missing))}")
        for number, row in enumerate(reader, 2):
            if row["split"] != WATERBIRDS_SPLITS[split]:
                continue
            try:
                rel, y, place = row["img_filename"], int(row["y"]), int(row["place"])
                if y not in (0, 1) or place not in (0, 1):
                    raise ValueError("y and place must be 0 or 1")
            except (TypeError, ValueError) as exc:
                skipped.add(f"{meta}:{number}: bad row ({exc})")
                continue
            if rel not in box_of:
                skipped.add(f"{meta}:{number}: no CUB box for {rel} in {cub_root}")
                continue
            group = f"{('landbird', 'waterbird')[y]}/{('land', 'water')[place]}"
            examples.append(ClsExample(rel, require(root / rel, "Waterbirds image"), box_of[rel], y, group))
    return ClsDataset(["landbird", "waterbird"], examples, skipped)


def _mask_loader(path: Path, class_id: int):
    def load() -> np.ndarray:
        try:
            with Image.open(path) as png:
                rgb = np.asarray(png.convert("RGB")).astype(np.int64)
        except (OSError, ValueError, SyntaxError) as exc:
            raise FalipError(f"cannot read the mask {path}: {exc}") from None
        mask = (rgb[..., 0] + 256 * rgb[..., 1]) == class_id
        if not mask.any():
            raise FalipError(f"the mask {path} has no pixel of class {class_id}")
        return mask

    return load


IMAGENET_NAMES = Path(__file__).with_name("imagenet_classnames.tsv")
_WNID = re.compile(r"^n\d{8}$")


def read_class_names(path: Path) -> dict[str, str]:
    """`wnid -> name` from lines "wnid name" (a tab or spaces between; `#` starts a comment line). A
    name is cut at its first comma, so ILSVRC's `LOC_synset_mapping.txt` ("n01440764 tench, Tinca
    tinca") gives "tench". The default, `IMAGENET_NAMES`, is the class-name list of CLIP's zero-shot
    ImageNet evaluation keyed by WordNet id (its header names the sources)."""
    names = {}
    for line in require(Path(path), "class-name file").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        wnid, _, name = line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        names[wnid.strip()] = name.strip().split(",")[0].strip()
    return names


def load_imagenet_s(
    root: Path,
    names: Path | None = None,
    split: str = "validation",
    region: str = "box",
    categories: Path | None = None,
) -> ClsDataset:
    """ImageNet-S (`ImageNetS919`, `ImageNetS300` or `ImageNetS50` folder): images in `<split>/<wnid>/`,
    semantic masks in `<split>-segmentation/<wnid>/*.png` whose class id is R + 256 G (1-based
    index into the sorted wnids, as ImageNet-S's README says).

    `region`: "box" (default: the paper's Sec. 3.3.2 gives classification boxes, transformed to the
    mask M) is the bounding box of the class's mask pixels; "mask" is the mask itself (ours).
    `names`: a "wnid name" file for the class names; by default `IMAGENET_NAMES`, the names CLIP's
    zero-shot ImageNet evaluation uses (OpenAI's notebook, as open_clip ships them). A class the
    names do not cover is an error: CLIP would otherwise be asked to tell "n01440764" from
    "n01443537". `categories`: the variant's category list (ImageNet-S's
    `ImageNetS_categories_im919.txt`, any order: it is sorted), needed when the folder holds only
    some classes; by default the sorted class folders are the categories.
    Raises FalipError for a missing folder or file, an unknown region, or a class without a name."""
    root = require_folder(Path(root), "ImageNet-S folder")
    if region not in ("mask", "box"):
        raise FalipError(f"unknown ImageNet-S region {region!r}; choose box or mask")
    images_dir = require(root / split, f"ImageNet-S image folder {split}/")
    masks_dir = require(root / f"{split}-segmentation", f"ImageNet-S mask folder {split}-segmentation/")
    wnids = sorted(p.name for p in masks_dir.iterdir() if p.is_dir())
    if categories is not None:
        listed = require(Path(categories), "ImageNet-S category list").read_text().split()
        wnids = sorted({w.strip() for w in listed if w.strip()})
    readable = read_class_names(IMAGENET_NAMES if names is None else Path(names))
    unnamed = [w for w in wnids if not readable.get(w)]
    if unnamed:
        source = "the shipped ImageNet names" if names is None else str(names)
        shown = ", ".join(unnamed[:5]) + (" ..." if len(unnamed) > 5 else "")
        raise FalipError(
            f"{len(unnamed)} ImageNet-S class(es) have no name in {source} ({shown}): "
            "give --names with a 'wnid name' line for each, so CLIP is not asked to read WordNet ids"
        )
    classes = [readable[w] for w in wnids]
    bare = [c for c in classes if _WNID.match(c)]
    if bare:
        raise FalipError(
            f"class name(s) {', '.join(bare[:5])} are WordNet ids, not names: CLIP cannot read them"
        )
    examples, skipped = [], Skipped()
    for label, wnid in enumerate(wnids):
        for mask in sorted((masks_dir / wnid).glob("*.png")) if (masks_dir / wnid).is_dir() else []:
            image = next((p for p in (images_dir / wnid).glob(mask.stem + ".*")), None)
            if image is None:
                skipped.add(f"{mask}: no image {mask.stem}.* in {images_dir / wnid}")
                continue
            loader = _mask_loader(mask, label + 1)
            examples.append(
                ClsExample(
                    f"{wnid}/{mask.stem}", image, loader if region == "mask" else _box_of(loader), label
                )
            )
    return ClsDataset(classes, examples, skipped)


def _box_of(mask_loader):
    def load() -> list[float]:
        from ..inputs.regions import region_box

        x0, y0, x1, y1 = region_box(mask_loader())
        return [x0, y0, x1 - x0, y1 - y0]

    return load
