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
import pickle
import re
from pathlib import Path
from typing import Optional

from ..errors import FalipError
from .base import Box, RecExpression, RecImage, coco_boxes, load_detections, require

COCO_ID = re.compile(r"COCO_\w+?_0*(\d+)")


def _coco_file(file_name: str) -> str:
    """ReCLIP and refer suffix COCO file names with the annotation id: drop it."""
    stem = Path(file_name).stem
    parts = stem.split("_")
    if stem.lower().startswith("coco") and len(parts) == 4:
        return "_".join(parts[:3]) + ".jpg"
    return file_name


def _candidates(image_id: str, gold_candidates: list[Box], detections: Optional[dict], width=None, height=None) -> list[Box]:
    """The gold objects' boxes, or the detector's proposals for the image (ReCLIP falls back to the
    whole image when the detector found nothing)."""
    if detections is None:
        return gold_candidates
    boxes = detections.get(str(image_id), [])
    if not boxes and width and height:
        return [[0.0, 0.0, float(width), float(height)]]
    return boxes


def _add(images: dict[str, RecImage], file_name: str, image_root: Path, boxes: list[Box], expression: RecExpression) -> None:
    item = images.get(file_name)
    if item is None:
        item = images[file_name] = RecImage(file_name, image_root / file_name, boxes)
    item.expressions.append(expression)


def load_reclip(annotations: Path, images: Path, detections: Optional[Path] = None) -> list[RecImage]:
    """`annotations`: ReCLIP's jsonl; `images`: COCO train2014."""
    jsonl, image_root = Path(annotations), Path(images)
    require(jsonl, "ReCLIP jsonl file", "e.g. refcoco_testa.jsonl from ReCLIP's data release")
    require(image_root, "image folder", "COCO train2014")
    dets = load_detections(detections) if detections else None
    found: dict[str, RecImage] = {}
    for number, line in enumerate(jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            datum = json.loads(line)
            file_name = _coco_file(datum["file_name"])
            gold_ids = datum["ann_id"] if isinstance(datum["ann_id"], list) else [datum["ann_id"]]
            anns = datum["anns"]
            gold = [list(map(float, a["bbox"])) for a in anns if a["id"] in gold_ids]
            candidates = _candidates(datum["image_id"], [list(map(float, a["bbox"])) for a in anns], dets,
                                     datum.get("width"), datum.get("height"))
            for s, sentence in enumerate(datum["sentences"]):
                key = f"{number}:{s}"
                _add(found, file_name, image_root, candidates, RecExpression(key, sentence["raw"].lower(), gold))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise FalipError(f"{jsonl}:{number}: not a ReCLIP record ({type(exc).__name__}: {exc})") from None
    return list(found.values())


def load_refer(annotations: Path, images: Path, split: str, split_by: str = "unc", detections: Optional[Path] = None) -> list[RecImage]:
    """`annotations`: the folder with `refs(<split_by>).p` and `instances.json`; `images`: COCO train2014."""
    folder, image_root = Path(annotations), Path(images)
    refs_file = require(folder / f"refs({split_by}).p", "refer annotation pickle", f"refer's data/<dataset>/refs({split_by}).p")
    coco_images, coco_anns = coco_boxes(require(folder / "instances.json", "COCO instances file", "refer's instances.json"))
    dets = load_detections(detections) if detections else None
    with open(refs_file, "rb") as handle:
        refs = pickle.load(handle)
    found: dict[str, RecImage] = {}
    splits = set()
    for ref in refs:
        splits.add(ref["split"])
        if ref["split"] != split:
            continue
        image_id = str(ref["image_id"])
        info = coco_images.get(image_id)
        if info is None:
            raise FalipError(f"{refs_file}: image {image_id} of ref {ref['ref_id']} is not in instances.json")
        anns = coco_anns.get(image_id, [])
        gold = [a["bbox"] for a in anns if a["id"] == ref["ann_id"]]
        candidates = _candidates(image_id, [a["bbox"] for a in anns], dets, info.get("width"), info.get("height"))
        for s, sentence in enumerate(ref["sentences"]):
            expr = RecExpression(f"{ref['ref_id']}:{s}", sentence["raw"].lower(), gold)
            _add(found, info["file_name"], image_root, candidates, expr)
    if not found:
        raise FalipError(f"{refs_file}: no ref in split {split!r}; splits there: {', '.join(sorted(splits))}")
    return list(found.values())


def load_transvg(annotations: Path, images: Path, instances: Optional[Path] = None, detections: Optional[Path] = None) -> list[RecImage]:
    """`annotations`: a split file such as `unc/unc_testA.pth`; `images`: COCO train2014."""
    import torch

    split_file, image_root = Path(annotations), Path(images)
    require(split_file, "TransVG split file", "e.g. data/unc/unc_testA.pth")
    if instances is None and detections is None:
        raise FalipError("a TransVG split file holds only the gold box: give COCO's instances.json or a detections file for the candidates")
    anns = coco_boxes(instances)[1] if instances else None
    dets = load_detections(detections) if detections else None
    items = torch.load(split_file, weights_only=False)
    found: dict[str, RecImage] = {}
    for number, item in enumerate(items):
        try:
            file_name, _, box, phrase = item[0], item[1], item[2], item[3]
        except (TypeError, IndexError):
            raise FalipError(f"{split_file}: item {number} is not (file, id, box, phrase, ...)") from None
        match = COCO_ID.match(Path(file_name).stem)
        image_id = str(int(match.group(1))) if match else Path(file_name).stem
        candidates = _candidates(image_id, [a["bbox"] for a in (anns or {}).get(image_id, [])], dets)
        if not candidates:
            raise FalipError(f"{split_file}: no candidate boxes for image {image_id} ({file_name})")
        _add(found, file_name, image_root, candidates, RecExpression(str(number), str(phrase).lower(), [list(map(float, box))]))
    return list(found.values())
