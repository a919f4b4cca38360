"""`falip heads rank`: which attention heads a pixel prompt moves (the paper's Fig. 6, right).

Over many regions, each region's prompted image against the original: the norm of each head's
change of the [CLS] term, `||G'_{l,h} - G_{l,h}||` (Eq. 5, in the residual stream before `ln_post`),
averaged over regions. One JSON line per image as it is done, so an interrupted run resumes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..datasets import ClsDataset, RecImage, read_image
from ..engine.unleash import head_deltas
from ..inputs import checks
from ..inputs.images import open_image
from ..inputs.regions import region_box
from ..tasks.visual_prompts import get_visual_prompt
from .distributed import single_process
from .store import ResultStore


@dataclass
class RegionSet:
    """One image and its regions (boxes or masks) to prompt."""

    key: str
    image: object
    regions: list


def region_sets(data: Sequence[RecImage] | ClsDataset) -> list[RegionSet]:
    """Every image's candidate boxes (referring-expression data), or each example's region."""
    if isinstance(data, ClsDataset):
        return [RegionSet(e.key, e.image, [e.region]) for e in data.examples]
    return [RegionSet(item.key, item.image, list(item.boxes)) for item in data]


def rank_heads(
    model,
    sets: Iterable[RegionSet],
    prompt: str,
    out: Path,
    *,
    config: dict,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Mean `||G' - G||` per (layer, head) over every region, as an (L, H) array; writes
    `out/results.jsonl` (resumable) and `out/heads.csv`."""
    model.needs_cls("falip heads rank")
    single_process("falip heads rank")
    draw = get_visual_prompt(prompt)
    limit = checks.optional_count("limit", limit)
    store = ResultStore(out, config, overwrite)
    try:
        done = store.done
        todo = [s for s in sets if s.key not in done][: None if limit is None else max(0, limit - len(done))]
        for item in tqdm(todo, desc="images", unit="img", disable=not progress):
            image = open_image(read_image(item.image))
            regions = [r() if callable(r) else r for r in item.regions]
            prompted = model.pixels([draw(image, region_box(r), box_format="xyxy") for r in regions]).to(
                model.device, model.dtype
            )
            original = model.pixels(image).to(model.device, model.dtype)
            with torch.no_grad():
                deltas, _ = head_deltas(model.backbone.visual, original, prompted, model.encoder.chunk_size)
            norms = deltas.float().norm(dim=-1).sum(0)  # (L, H), summed over the image's regions
            store.add([{"key": item.key, "regions": len(regions), "sum": norms.tolist()}])
        total = sum(r["regions"] for r in store.records)
        effect = np.sum([np.asarray(r["sum"]) for r in store.records], axis=0) / max(total, 1)
        write_heads_csv(out / "heads.csv", effect)
        return effect
    finally:
        store.close()


def write_heads_csv(path: Path, effect: np.ndarray) -> None:
    """`layer`, `head` (0-based) and `effect`, one row per head of the model, strongest first."""
    order = np.argsort(-effect, axis=None)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "head", "effect"])
        for flat in order:
            layer, head = np.unravel_index(flat, effect.shape)
            writer.writerow([int(layer), int(head), f"{effect[layer, head]:.6g}"])


def top_heads(effect: np.ndarray, count: int) -> list[tuple[int, int]]:
    """The `count` (layer, head) pairs with the largest effect."""
    order = np.argsort(-effect, axis=None)[:count]
    return [tuple(int(i) for i in np.unravel_index(flat, effect.shape)) for flat in order]
