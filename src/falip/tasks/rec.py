"""Referring expression comprehension: rank candidate boxes for an expression, zero-shot.

Box features come from a region method (`methods`); scores are cosine similarities. "subtract"
(ReCLIP) removes each box's mean score over negative captions sampled from the dataset's other
expressions, and ensembles add or take the maximum of several methods' or models' scores, each
softmax-normalised over the boxes first. A prediction is right when its box overlaps a gold box
with IoU above 0.5.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import FalipError
from ..regions import to_xyxy


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `xywh` boxes."""
    ax0, ay0, ax1, ay1 = to_xyxy(a)
    bx0, by0, bx1, by1 = to_xyxy(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def sample_negatives(pool: Sequence[str], exclude: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` distinct captions from `pool` (the dataset's other expressions), none in `exclude`, seeded."""
    candidates = sorted(set(pool) - set(exclude))
    if not candidates:
        raise FalipError("no negative captions to subtract: the pool holds only this image's expressions")
    rng = np.random.default_rng(seed)
    return [candidates[i] for i in rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)]


def subtract(scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """ReCLIP's post-processing: (R, T) scores minus each box's mean score over its negatives, given
    as (R, N) shared by every text or (R, T, N), each text with its own negatives."""
    if negative_scores.dim() == 2:
        negative_scores = negative_scores[:, None, :]
    return scores - negative_scores.mean(dim=-1)


def ensemble(scores: Sequence[torch.Tensor], how: str = "sum") -> torch.Tensor:
    """Combine (R, T) score matrices of several methods or models, each softmax-normalised over boxes."""
    stacked = torch.stack([torch.softmax(s, dim=0) for s in scores])
    if how == "sum":
        return stacked.sum(0)
    if how == "max":
        return stacked.amax(0)
    raise FalipError(f"unknown ensemble {how!r}; choose sum or max")


def accuracy_at_iou(chosen: Sequence[Sequence[float]], gold: Sequence[Sequence[float]], threshold: float = 0.5) -> float:
    """Share of expressions whose chosen box overlaps the gold box with IoU above `threshold`."""
    hits = [iou(c, g) > threshold for c, g in zip(chosen, gold)]
    return sum(hits) / len(hits) if hits else float("nan")
