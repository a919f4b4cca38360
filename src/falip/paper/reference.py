"""Compare this implementation with vectors made by the authors' own FALIP code.

The folder format (`reference.npz`, `reference.json`, images, OpenAI-format weights and BPE file)
and the tolerances are those of `shared/reference/authors-falip/README.md` in this project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.model import load
from ..errors import FalipError

TOLERANCES = {"mask": 0.05, "global": 1e-5, "text": 1e-5, "box_effect": 0.1, "box_rel": 1e-3}


@dataclass
class ReferenceReport:
    """Worst case over all records of each compared quantity."""

    mask: float  # max |row - ref| / alpha
    same_tokens: bool  # every mask row has the reference's support
    tokens_equal: bool
    global_rel: float
    text_rel: float
    box_effect: float  # max |f - ref| / |ref - global|
    box_rel: float

    @property
    def passed(self) -> bool:
        t = TOLERANCES
        return (
            self.same_tokens
            and self.tokens_equal
            and self.mask <= t["mask"]
            and self.global_rel <= t["global"]
            and self.text_rel <= t["text"]
            and self.box_effect <= t["box_effect"]
            and self.box_rel <= t["box_rel"]
        )

    def table(self) -> str:
        t = TOLERANCES
        rows = [
            ("mask rows: max |diff| / alpha", t["mask"], self.mask),
            ("global features: relative error", t["global"], self.global_rel),
            ("text features: relative error", t["text"], self.text_rel),
            ("box features: |f - ref| / |ref - global|", t["box_effect"], self.box_effect),
            ("box features: relative error", t["box_rel"], self.box_rel),
        ]
        lines = [f"{'quantity':<44} {'tolerance':>10} {'measured':>10}"]
        lines += [f"{name:<44} {tol:>10.0e} {value:>10.2e}" for name, tol, value in rows]
        lines.append(
            f"{'mask tokens identical, token ids equal':<44} {'yes':>10} "
            f"{('yes' if self.same_tokens and self.tokens_equal else 'NO'):>10}"
        )
        return "\n".join(lines)


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def check_reference(folder: str | Path, gaussian: str = "authors") -> ReferenceReport:
    """Run every record of a reference folder through this implementation."""
    folder = Path(folder)
    if not (folder / "reference.npz").is_file():
        raise FalipError(f"no reference.npz in {folder}")
    ref = np.load(folder / "reference.npz")
    meta = json.loads((folder / "reference.json").read_text())
    model = load(
        folder / "weights.safetensors",
        tokenizer=str(folder / "bpe_simple_vocab_16e6.txt.gz"),
        gaussian=gaussian,
    )
    images = [Image.open(folder / im["file"]).convert("RGB") for im in meta["images"]]
    glob = ref["global_features"]

    mask, same, effect, box_rel = 0.0, True, 0.0, 0.0
    for b, image in enumerate(images):
        for alpha in np.unique(ref["alpha"]):
            recs = np.nonzero((ref["image_index"] == b) & (ref["alpha"] == alpha))[0]
            if not len(recs):
                continue
            boxes = ref["boxes_xywh"][recs].tolist()
            rows = model.region_rows(image.size, boxes, alpha=float(alpha)).numpy()
            mask = max(mask, float(np.abs(rows - ref["mask_rows"][recs]).max() / alpha))
            same &= bool(np.array_equal(rows != 0, ref["mask_rows"][recs] != 0))
            feats = model.encode_regions(image, boxes, alpha=float(alpha)).numpy()
            expected = ref["box_features"][recs]
            effect = max(
                effect,
                float(
                    (
                        np.linalg.norm(feats - expected, axis=-1)
                        / np.linalg.norm(expected - glob[b], axis=-1)
                    ).max()
                ),
            )
            box_rel = max(box_rel, float(_rel(feats, expected).max()))
    captions = meta["captions"]
    return ReferenceReport(
        mask=mask,
        same_tokens=same,
        tokens_equal=bool(np.array_equal(model.tokenize(captions).numpy(), ref["token_ids"])),
        global_rel=float(_rel(model.encode_image(images).numpy(), glob).max()),
        text_rel=float(_rel(model.encode_text(captions).numpy(), ref["text_features"]).max()),
        box_effect=effect,
        box_rel=box_rel,
    )
