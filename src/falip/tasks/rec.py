"""Referring expression comprehension: rank candidate boxes for an expression, zero-shot.

Box features come from a region method (`methods`); scores are CLIP logits. "subtract" (RedCircle's
post-processing, which the paper's Sec. 3.3.1 takes from [40]) removes each box's mean score over Q
negative captions sampled, seeded, from the data set's expressions of other images; Q = 500 by
default, the value in a commented-out line of the FALIP authors' `main.py` (their released code runs
with subtract switched off).
Ensembles combine several methods' or models' scores: by default the raw logits are summed, as the
authors' code does (`--box_method_aggregator sum`, and a sum over models); "softmax-sum" and
"softmax-max" normalise each system over the boxes first. A prediction is right when its box
overlaps a gold box with IoU above 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import FalipError
from ..inputs.regions import to_xyxy


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `xywh` boxes (pixels); 0 when the union is empty. FalipError for a
    malformed box (`to_xyxy`)."""
    ax0, ay0, ax1, ay1 = to_xyxy(a)
    bx0, by0, bx1, by1 = to_xyxy(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


class NegativeSampler:
    """Draws negative captions from a data set's expressions: `sample` returns indices into
    `texts` (the distinct expressions, sorted), so each caption is encoded once and reused."""

    def __init__(self, pool: Sequence[str]):
        """`pool`: the data set's expressions (repeats allowed: kept once, sorted)."""
        self.texts = sorted(set(pool))
        self._index = {t: i for i, t in enumerate(self.texts)}

    def sample(self, exclude: Sequence[str], count: int, seed: int) -> np.ndarray:
        """`count` distinct indices into `texts` (all there are if fewer), none of a text in `exclude`,
        drawn with `seed`. FalipError when every text is excluded."""
        allowed = np.ones(len(self.texts), bool)
        allowed[[self._index[t] for t in exclude if t in self._index]] = False
        candidates = np.flatnonzero(allowed)
        if candidates.size == 0:
            raise FalipError("no negative captions to subtract: the pool holds only this image's expressions")
        rng = np.random.default_rng(seed)
        return candidates[rng.choice(candidates.size, size=min(count, candidates.size), replace=False)]


def sample_negatives(pool: Sequence[str], exclude: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` distinct captions from `pool` (the dataset's other expressions), none in `exclude`, seeded."""
    sampler = NegativeSampler(pool)
    return [sampler.texts[i] for i in sampler.sample(exclude, count, seed)]


def subtract(scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """RedCircle's subtract (Shtedritski et al., the paper's [40]): (R, T) scores minus each box's mean
    score over its negatives, given as (R, N) shared by every text or (R, T, N), each text with its own
    negatives; returns (R, T)."""
    if negative_scores.dim() == 2:
        negative_scores = negative_scores[:, None, :]
    return scores - negative_scores.mean(dim=-1)


ENSEMBLES = ("sum", "max", "softmax-sum", "softmax-max")


def ensemble(scores: Sequence[torch.Tensor], how: str = "sum") -> torch.Tensor:
    """Combine (R, T) score matrices of several methods or models: "sum" / "max" of the raw logits
    (the authors'), or "softmax-sum" / "softmax-max" of each softmax-normalised over the boxes.
    Returns (R, T); FalipError for a `how` not in `ENSEMBLES`."""
    if how not in ENSEMBLES:
        raise FalipError(f"unknown ensemble {how!r}; choose one of {', '.join(ENSEMBLES)}")
    normalise, combine = how.startswith("softmax-"), how.removeprefix("softmax-")
    stacked = torch.stack([torch.softmax(s, dim=0) if normalise else s for s in scores])
    return stacked.sum(0) if combine == "sum" else stacked.amax(0)


def accuracy_at_iou(
    chosen: Sequence[Sequence[float]], gold: Sequence[Sequence[float]], threshold: float = 0.5
) -> float:
    """Share of expressions whose chosen box overlaps the gold box (both `xywh`, pixels) with IoU above
    `threshold`; NaN for no expression."""
    hits = [iou(c, g) > threshold for c, g in zip(chosen, gold)]
    return sum(hits) / len(hits) if hits else float("nan")
