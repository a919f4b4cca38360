"""RefCOCO, RefCOCO+ and RefCOCOg in the three layouts people have them in.

- ReCLIP's jsonl (`reclip`): one line per referred object, with the image's annotations as
  candidates; images in COCO's train2014 folder.
- refer's pickle (`refer`): `refs(unc).p` (or `refs(umd).p`, `refs(google).p`) and `instances.json`
  in one folder; candidates are all annotated objects of the image.
- TransVG/ReSC split files (`transvg`): `<name>_<split>.pth` lists of (file, id, xywh box, phrase,
  ...) holding only the gold box, so candidates come from `instances.json` or a detections file.

`detections` (ReCLIP's detector-proposal JSON) replaces the gold candidates in every layout.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

from ..errors import FalipError
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
) -> None:
    item = images.get(file_name)
    if item is None:
        item = images[file_name] = RecImage(
            file_name, image_root / file_name, boxes, whole_image_fallback=proposals
        )
    item.expressions.append(expression)


def load_reclip(annotations: Path, images: Path, detections: Path | None = None) -> RecData:
    """`annotations`: ReCLIP's jsonl; `images`: COCO train2014."""
    jsonl, image_root = Path(annotations), Path(images)
    require(jsonl, "ReCLIP jsonl file", "e.g. refcoco_testa.jsonl from ReCLIP's data release")
    require_folder(image_root, "image folder", "COCO train2014")
    dets = load_detections(detections) if detections else None
    found: dict[str, RecImage] = {}
    skipped = Skipped()
    for number, line in enumerate(jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{jsonl}:{number}"
        try:
            datum = json.loads(line)
            file_name = _coco_file(datum["file_name"])
            gold_ids = datum["ann_id"] if isinstance(datum["ann_id"], list) else [datum["ann_id"]]
            anns = datum["anns"]
            boxes = [_box(a["bbox"]) for a in anns]
            gold = [box for a, box in zip(anns, boxes) if a["id"] in gold_ids]
            sentences = [sentence["raw"].lower() for sentence in datum["sentences"]]
            image_id = datum["image_id"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            skipped.add(f"{where}: not a ReCLIP record ({type(exc).__name__}: {exc})")
            continue
        if not gold:
            skipped.add(f"{where}: its ann_id {datum['ann_id']} is not among the image's anns")
            continue
        candidates = _candidates(image_id, boxes, dets, datum.get("width"), datum.get("height"))
        for s, sentence in enumerate(sentences):
            expression = RecExpression(f"{number}:{s}", sentence, gold)
            _add(found, file_name, image_root, candidates, expression, dets is not None)
    return RecData(found.values(), skipped)


def _box(values) -> Box:
    """An `xywh` box of 4 finite numbers, with positive width and height."""
    box = [float(v) for v in values]
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"bad box {values}")
    return box


def load_refer(
    annotations: Path, images: Path, split: str, split_by: str = "unc", detections: Path | None = None
) -> list[RecImage]:
    """`annotations`: the folder with `refs(<split_by>).p` and `instances.json`; `images`: COCO train2014."""
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
    try:
        with open(refs_file, "rb") as handle:
            refs = pickle.load(handle)
        iter(refs)
    except Exception as exc:  # a damaged or foreign pickle can raise almost anything
        raise FalipError(
            f"{refs_file}: not a refer annotation pickle ({type(exc).__name__}: {exc})"
        ) from None
    found: dict[str, RecImage] = {}
    splits, skipped = set(), Skipped()
    for number, ref in enumerate(refs):
        try:
            splits.add(ref["split"])
            if ref["split"] != split:
                continue
            image_id, ann_id, ref_id = str(ref["image_id"]), ref["ann_id"], ref["ref_id"]
            sentences = [sentence["raw"].lower() for sentence in ref["sentences"]]
        except (KeyError, TypeError, AttributeError) as exc:
            skipped.add(f"{refs_file}: ref {number} is not a refer record ({type(exc).__name__}: {exc})")
            continue
        info = coco_images.get(image_id)
        if info is None:
            skipped.add(f"{refs_file}: image {image_id} of ref {ref_id} is not in instances.json")
            continue
        anns = coco_anns.get(image_id, [])
        gold = [a["bbox"] for a in anns if a["id"] == ann_id]
        if not gold:
            skipped.add(
                f"{refs_file}: ref {ref_id}'s ann_id {ann_id} is not among image {image_id}'s annotations"
            )
            continue
        candidates = _candidates(
            image_id, [a["bbox"] for a in anns], dets, info.get("width"), info.get("height")
        )
        for s, sentence in enumerate(sentences):
            _add(
                found,
                info["file_name"],
                image_root,
                candidates,
                RecExpression(f"{ref_id}:{s}", sentence, gold),
                dets is not None,
            )
    if not found:
        raise FalipError(
            f"{refs_file}: no ref in split {split!r}; splits there: {', '.join(sorted(map(str, splits)))}"
        )
    return RecData(found.values(), skipped)


def load_transvg(
    annotations: Path, images: Path, instances: Path | None = None, detections: Path | None = None
) -> list[RecImage]:
    """`annotations`: a split file such as `unc/unc_testA.pth`; `images`: COCO train2014."""
    import torch

    split_file = Path(annotations)
    require(split_file, "TransVG split file", "e.g. data/unc/unc_testA.pth")
    image_root = require_folder(Path(images), "image folder", "COCO train2014")
    if instances is None and detections is None:
        raise FalipError(
            "a TransVG split file holds only the gold box: give COCO's instances.json or a detections file "
            "for the candidates"
        )
    anns = coco_boxes(instances)[1] if instances else None
    dets = load_detections(detections) if detections else None
    try:
        items = list(torch.load(split_file, weights_only=False))
    except Exception as exc:  # a damaged file can raise almost anything from unpickling
        raise FalipError(f"{split_file}: not a TransVG split file ({type(exc).__name__}: {exc})") from None
    found: dict[str, RecImage] = {}
    skipped = Skipped()
    for number, item in enumerate(items):
        try:
            file_name, box, phrase = str(item[0]), _box(item[2]), str(item[3])
        except (TypeError, IndexError, ValueError) as exc:
            skipped.add(f"{split_file}: item {number} is not (file, id, box, phrase, ...) ({exc})")
            continue
        match = COCO_ID.match(Path(file_name).stem)
        image_id = str(int(match.group(1))) if match else Path(file_name).stem
        candidates = _candidates(image_id, [a["bbox"] for a in (anns or {}).get(image_id, [])], dets)
        if not candidates and dets is None:
            skipped.add(f"{split_file}: item {number}: no candidate boxes for image {image_id} ({file_name})")
            continue
        expression = RecExpression(str(number), phrase.lower(), [box])
        _add(found, file_name, image_root, candidates, expression, dets is not None)
    return RecData(found.values(), skipped)
