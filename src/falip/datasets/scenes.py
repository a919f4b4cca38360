"""The scene world's test split as evaluation data: referring expressions and region classes.

Multi-object scenes (2-4 objects) of a split, as in `falip eval-toy`; every object's box is a
candidate for referring expressions and a region to name among the 30 colour-shape classes.
"""

from __future__ import annotations

from functools import lru_cache

from ..scenes.world import class_names, make_scene
from .base import ClsDataset, ClsExample, RecExpression, RecImage

MULTI_OFFSET = 1_000_000  # the multi-object scenes' indices, as in `scenes.evaluate.Split`


@lru_cache(maxsize=8)
def _scene(split: str, index: int):
    return make_scene(split, MULTI_OFFSET + index, objects=(2, 4))


def _image(split: str, index: int):
    return lambda: _scene(split, index).image


def scene_rec(split: str = "test", count: int = 500) -> list[RecImage]:
    out = []
    for i in range(count):
        scene = _scene(split, i)
        boxes = [list(o.box) for o in scene.objects]
        exprs = [RecExpression(f"{i}:{target}", text, [boxes[target]]) for target, text, _ in scene.expressions()]
        out.append(RecImage(f"{split}/{i}", _image(split, i), boxes, exprs))
    return out


def scene_cls(split: str = "test", count: int = 500) -> ClsDataset:
    names = class_names()
    examples = [
        ClsExample(f"{split}/{i}:{k}", _image(split, i), list(o.box), names.index(o.label))
        for i in range(count)
        for k, o in enumerate(_scene(split, i).objects)
    ]
    return ClsDataset(names, examples)
