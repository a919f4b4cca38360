"""Accuracy with its Wilson 95% confidence interval: what every table in the project reports."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Accuracy:
    """`correct` hits out of `total` examples; `correct` may be fractional (a tie counts as its expected
    share)."""

    correct: float
    total: int

    @property
    def value(self) -> float:
        """correct / total as a fraction; NaN when `total` is 0."""
        return self.correct / self.total if self.total else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson 95% confidence interval."""
        n, p = self.total, self.value
        if not n:
            return float("nan"), float("nan")
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def __str__(self) -> str:
        """`{accuracy}% [{low}, {high}] (n={total})`: the Wilson 95% interval in percent, one decimal."""
        lo, hi = self.interval()
        return f"{100 * self.value:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={self.total})"

    def to_dict(self) -> dict:
        """{"accuracy", "ci95": [low, high], "n"} as fractions rounded to 4 decimals; accuracy and bounds None
        when `total` is 0."""
        if not self.total:
            return {"accuracy": None, "ci95": [None, None], "n": 0}
        lo, hi = self.interval()
        return {"accuracy": round(self.value, 4), "ci95": [round(lo, 4), round(hi, 4)], "n": self.total}
