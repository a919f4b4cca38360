"""The scene world's test split as evaluation data: referring expressions and region classes.

Multi-object scenes (2-4 objects) of a split, as in `falip eval-toy`; every object's box is a
candidate for referring expressions and a region to name among the 30 colour-shape classes.
Scenes are generated once and kept (500 of them take about 25 MB). `phrasing="relations"` gives the
relation scenes instead (`scene_relations`: twins told apart by position or size, each expression
with its group).
"""

from __future__ import annotations

from ..errors import FalipError
from ..inputs import checks
from .base import ClsDataset, ClsExample, RecExpression, RecImage
from .scene_relations import make_relation_scene, relation_expressions
from .scene_world import SPLITS, Scene, class_names, make_scene

MULTI_OFFSET = 1_000_000  # the multi-object scenes' indices, as in `scenes.evaluate.Split`


def _scenes(split: str, count: int) -> list[Scene]:
    if split not in SPLITS:
        raise FalipError(f"unknown scene split {split!r}; choose {', '.join(SPLITS)}")
    return [make_scene(split, MULTI_OFFSET + i, objects=(2, 4)) for i in range(checks.count("count", count))]


PHRASINGS = ("scenes", "relations")


def _relation_rec(split: str, count: int) -> list[RecImage]:
    if split not in SPLITS:
        raise FalipError(f"unknown scene split {split!r}; choose {', '.join(SPLITS)}")
    out = []
    for i in range(checks.count("count", count)):
        scene = make_relation_scene(split, MULTI_OFFSET + i)
        boxes = [list(o.box) for o in scene.objects]
        exprs = [
            RecExpression(f"{i}:{target}", text, [boxes[target]], group)
            for target, text, group in relation_expressions(scene)
        ]
        out.append(RecImage(f"{split}/relations/{i}", (lambda image=scene.image: image), boxes, exprs))
    return out


def scene_rec(split: str = "test", count: int = 500, phrasing: str = "scenes") -> list[RecImage]:
    """The scene world's referring expressions: `phrasing` "scenes" (the scene world's own, as the toy
    model's metrics use them) or "relations" (relation scenes, grouped by what the expression names)."""
    if phrasing not in PHRASINGS:
        raise FalipError(f"unknown scene phrasing {phrasing!r}; choose {', '.join(PHRASINGS)}")
    if phrasing == "relations":
        return _relation_rec(split, count)
    out = []
    for i, scene in enumerate(_scenes(split, count)):
        boxes = [list(o.box) for o in scene.objects]
        exprs = [
            RecExpression(f"{i}:{target}", text, [boxes[target]]) for target, text, _ in scene.expressions()
        ]
        out.append(RecImage(f"{split}/{i}", (lambda image=scene.image: image), boxes, exprs))
    return out


def scene_cls(split: str = "test", count: int = 500) -> ClsDataset:
    """Region classification on `count` multi-object scenes of `split`: one example per object, its box
    the region and its colour-shape class the label (among the 30 of `class_names()`).

    Raises FalipError for an unknown split or a `count` that is not a whole number of at least 1."""
    names = class_names()
    examples = [
        ClsExample(f"{split}/{i}:{k}", (lambda image=scene.image: image), list(o.box), names.index(o.label))
        for i, scene in enumerate(_scenes(split, count))
        for k, o in enumerate(scene.objects)
    ]
    return ClsDataset(names, examples)
