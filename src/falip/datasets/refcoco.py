"""RefCOCO, RefCOCO+ and RefCOCOg in the three layouts people have them in.

- ReCLIP's jsonl (`reclip`): one line per referred object, with the image's annotations as
  candidates; images in COCO's train2014 folder.
- refer's pickle (`refer`): `refs(unc).p` (or `refs(umd).p`, `refs(google).p`) and `instances.json`
  in one folder; candidates are all annotated objects of the image.
- TransVG/ReSC split files (`transvg`): `<name>_<split>.pth` lists of (file, id, xywh box, phrase,
  ...) holding only the gold box, so candidates come from `instances.json` or a detections file.

`detections` (ReCLIP's detector-proposal JSON) replaces the gold candidates in every layout.

What a loader leaves out it names in `skipped.json` (`--strict`: stops there): a record it cannot read,
an expression with no visible character (`falip.inputs.texts`), a gold box with no area (its
expressions), a candidate box with no area (that candidate alone; the image keeps the others). Images
carry the size their annotation gives (`instances.json`, ReCLIP's width and height), checked when the
image is decoded. The refer pickle and TransVG's split file are opened by `falip.inputs.files`, which
runs no code from them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import FalipError
from ..inputs.files import lines, read_plain_pickle, read_torch_data
from ..inputs.texts import check_text
from .base import (
    Box,
    RecData,
    RecExpression,
    RecImage,
    Skipped,
    coco_boxes,
    load_detections,
    require,
    require_folder,
)

COCO_ID = re.compile(r"COCO_\w+?_0*(\d+)")


def _coco_file(file_name: str) -> str:
    """ReCLIP and refer suffix COCO file names with the annotation id: drop it."""
    stem = Path(file_name).stem
    parts = stem.split("_")
    if stem.lower().startswith("coco") and len(parts) == 4:
        return "_".join(parts[:3]) + ".jpg"
    return file_name


def _candidates(
    image_id: str, gold_candidates: list[Box], detections: dict | None, width=None, height=None
) -> list[Box]:
    """The gold objects' boxes, or the detector's proposals for the image; none when the detector found
    nothing there, and the runner then takes the whole decoded image (`RecImage.whole_image_fallback`,
    as ReCLIP's `main.py` does with `img.width, img.height`), whatever the annotation says of its size."""
    if detections is None:
        return gold_candidates
    return detections.get(str(image_id), [])


def _add(
    images: dict[str, RecImage],
    file_name: str,
    image_root: Path,
    boxes: list[Box],
    expression: RecExpression,
    proposals: bool = False,
    size: tuple[int, int] | None = None,
) -> None:
    item = images.get(file_name)
    if item is None:
        item = images[file_name] = RecImage(
            file_name, image_root / file_name, boxes, whole_image_fallback=proposals, size=size
        )
    item.expressions.append(expression)


def _size(width, height) -> tuple[int, int] | None:
    """The annotated (width, height) of an image, when the annotation gives two positive whole numbers."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 and (w, h) == (width, height) else None


def _usable(boxes: list, where: str, skipped: Skipped, ids: list | None = None) -> list[Box]:
    """The candidate boxes that have an area; each other one is named (by its annotation id, when `ids`
    gives them) in `skipped` and dropped alone."""
    kept = []
    for index, values in enumerate(boxes):
        try:
            kept.append(_box(values))
        except (TypeError, ValueError):
            name = f"annotation {ids[index]}" if ids is not None else f"candidate {index}"
            skipped.add(
                f"{where}: {name}'s box {values} has no area: that candidate dropped, the others kept"
            )
    return kept


def _gold(boxes: list, where: str, skipped: Skipped) -> list[Box] | None:
    """The gold boxes, or None (named in `skipped`) when one has no area: its expressions are left out."""
    try:
        return [_box(b) for b in boxes]
    except (TypeError, ValueError):
        bad = next(b for b in boxes if not _has_area(b))
        skipped.add(f"{where}: the gold box {bad} has no area: its expressions left out")
        return None


def _has_area(values) -> bool:
    try:
        _box(values)
    except (TypeError, ValueError):
        return False
    return True


def _sentences(texts: list, where: str, skipped: Skipped) -> list[tuple[int, str]]:
    """(index, lower-cased text) of the expressions the door accepts; each other one named in `skipped`."""
    kept = []
    for index, text in enumerate(texts):
        try:
            kept.append((index, check_text(text).lower()))
        except FalipError as exc:
            skipped.add(f"{where} expression {index}: {exc}")
    return kept


def load_reclip(annotations: Path, images: Path, detections: Path | None = None) -> RecData:
    """`annotations`: ReCLIP's jsonl (one JSON record per line, lines split on "\\n" alone); `images`: COCO
    train2014."""
    jsonl, image_root = Path(annotations), Path(images)
    require(jsonl, "ReCLIP jsonl file", "e.g. refcoco_testa.jsonl from ReCLIP's data release")
    require_folder(image_root, "image folder", "COCO train2014")
    dets = load_detections(detections) if detections else None
    found: dict[str, RecImage] = {}
    skipped = Skipped()
    for number, line in enumerate(lines(jsonl.read_text(encoding="utf-8")), 1):
        if not line.strip():
            continue
        where = f"{jsonl}:{number}"
        try:
            datum = json.loads(line)
            file_name = _coco_file(datum["file_name"])
            gold_ids = datum["ann_id"] if isinstance(datum["ann_id"], list) else [datum["ann_id"]]
            anns = datum["anns"]
            ann_ids, ann_boxes = [a["id"] for a in anns], [a["bbox"] for a in anns]
            texts = [sentence["raw"] for sentence in datum["sentences"]]
            image_id = datum["image_id"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            skipped.add(f"{where}: not a ReCLIP record ({type(exc).__name__}: {exc})")
            continue
        if not any(i in gold_ids for i in ann_ids):
            skipped.add(f"{where}: its ann_id {datum['ann_id']} is not among the image's anns")
            continue
        gold = _gold([b for i, b in zip(ann_ids, ann_boxes) if i in gold_ids], where, skipped)
        if gold is None:
            continue
        candidates = _candidates(image_id, ann_boxes, dets, datum.get("width"), datum.get("height"))
        candidates = _usable(candidates, f"{where} (image {image_id})", skipped, None if dets else ann_ids)
        size = _size(datum.get("width"), datum.get("height"))
        for s, sentence in _sentences(texts, where, skipped):
            expression = RecExpression(f"{number}:{s}", sentence, gold)
            _add(found, file_name, image_root, candidates, expression, dets is not None, size)
    return RecData(found.values(), skipped)


def _box(values) -> Box:
    """An `xywh` box of 4 finite numbers, with positive width and height."""
    box = [float(v) for v in values]
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"bad box {values}")
    return box


def load_refer(
    annotations: Path, images: Path, split: str, split_by: str = "unc", detections: Path | None = None
) -> RecData:
    """`annotations`: the folder with `refs(<split_by>).p` and `instances.json`; `images`: COCO train2014.
    The pickle is read as plain data (`falip.inputs.files.read_plain_pickle`: no code runs; Python 2's
    byte strings become text)."""
    folder = require_folder(
        Path(annotations), "refer annotation folder", "with refs(unc).p and instances.json"
    )
    image_root = require_folder(Path(images), "image folder", "COCO train2014")
    refs_file = require(
        folder / f"refs({split_by}).p",
        "refer annotation pickle",
        f"refer's data/<dataset>/refs({split_by}).p",
    )
    coco_images, coco_anns = coco_boxes(
        require(folder / "instances.json", "COCO instances file", "refer's instances.json")
    )
    dets = load_detections(detections) if detections else None
    refs = read_plain_pickle(refs_file, "refer annotation pickle")
    if not isinstance(refs, (list, tuple)):
        raise FalipError(
            f"{refs_file}: not a refer annotation pickle (a {type(refs).__name__}, not a list of refs)"
        )
    found: dict[str, RecImage] = {}
    splits, skipped, in_split = set(), Skipped(), 0
    for number, ref in enumerate(refs):
        try:
            splits.add(ref["split"])
            if ref["split"] != split:
                continue
            in_split += 1
            image_id, ann_id, ref_id = str(ref["image_id"]), ref["ann_id"], ref["ref_id"]
            texts = [sentence["raw"] for sentence in ref["sentences"]]
        except (KeyError, TypeError, AttributeError) as exc:
            skipped.add(f"{refs_file}: ref {number} is not a refer record ({type(exc).__name__}: {exc})")
            continue
        info = coco_images.get(image_id)
        if info is None:
            skipped.add(f"{refs_file}: image {image_id} of ref {ref_id} is not in instances.json")
            continue
        anns = coco_anns.get(image_id, [])
        gold_boxes = [a["bbox"] for a in anns if a["id"] == ann_id]
        if not gold_boxes:
            skipped.add(
                f"{refs_file}: ref {ref_id}'s ann_id {ann_id} is not among image {image_id}'s annotations"
            )
            continue
        gold = _gold(gold_boxes, f"{refs_file}: ref {ref_id}", skipped)
        if gold is None:
            continue
        candidates = _candidates(
            image_id, [a["bbox"] for a in anns], dets, info.get("width"), info.get("height")
        )
        ids = None if dets else [a["id"] for a in anns]
        candidates = _usable(candidates, f"{folder / 'instances.json'}: image {image_id}", skipped, ids)
        size = _size(info.get("width"), info.get("height"))
        for s, sentence in _sentences(texts, f"{refs_file}: ref {ref_id}", skipped):
            _add(
                found,
                info["file_name"],
                image_root,
                candidates,
                RecExpression(f"{ref_id}:{s}", sentence, gold),
                dets is not None,
                size,
            )
    if not in_split:
        raise FalipError(
            f"{refs_file}: no ref in split {split!r}; splits there: {', '.join(sorted(map(str, splits)))}"
        )
    return RecData(found.values(), skipped)


def load_transvg(
    annotations: Path, images: Path, instances: Path | None = None, detections: Path | None = None
) -> RecData:
    """`annotations`: a split file such as `unc/unc_testA.pth`, read with `torch.load(weights_only=True)`
    (`falip.inputs.files.read_torch_data`: no code runs); `images`: COCO train2014."""
    split_file = Path(annotations)
    require(split_file, "TransVG split file", "e.g. data/unc/unc_testA.pth")
    image_root = require_folder(Path(images), "image folder", "COCO train2014")
    if instances is None and detections is None:
        raise FalipError(
            "a TransVG split file holds only the gold box: give COCO's instances.json or a detections file "
            "for the candidates"
        )
    coco_images, anns = coco_boxes(instances) if instances else ({}, None)
    dets = load_detections(detections) if detections else None
    items = read_torch_data(split_file, "TransVG split file")
    if not isinstance(items, (list, tuple)):
        raise FalipError(
            f"{split_file}: not a TransVG split file (a {type(items).__name__}, not a list of items)"
        )
    found: dict[str, RecImage] = {}
    skipped = Skipped()
    for number, item in enumerate(items):
        where = f"{split_file}: item {number}"
        try:
            file_name, phrase = str(item[0]), item[3]
            box = _box(item[2])
        except (TypeError, IndexError, ValueError) as exc:
            skipped.add(f"{where} is not (file, id, box with an area, phrase, ...) ({exc})")
            continue
        match = COCO_ID.match(Path(file_name).stem)
        image_id = str(int(match.group(1))) if match else Path(file_name).stem
        image_anns = (anns or {}).get(image_id, [])
        candidates = _candidates(image_id, [a["bbox"] for a in image_anns], dets)
        ids = None if dets else [a["id"] for a in image_anns]
        candidates = _usable(candidates, f"{where} (image {image_id})", skipped, ids)
        if not candidates and dets is None:
            skipped.add(f"{where}: no candidate boxes for image {image_id} ({file_name})")
            continue
        info = coco_images.get(image_id, {})
        size = _size(info.get("width"), info.get("height"))
        for _, sentence in _sentences([phrase], where, skipped):
            expression = RecExpression(str(number), sentence, [box])
            _add(found, file_name, image_root, candidates, expression, dets is not None, size)
    return RecData(found.values(), skipped)
