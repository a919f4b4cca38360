"""Scenes for relational referring expressions: twins told apart only by where they are or their size.

The scene world's own expressions (`Scene.expressions`) word relations one way ("the left red
circle") and only for rare twins; the toy model's shipped metrics rest on them, so they stay as
they are. These scenes come from their own seed stream (same splits, disjoint from every other
scene) and each holds one pair of twins: two objects of the same shape, colour and texture, of the
same size (told apart by position) or, in about a third of the scenes, one small and one big (told
apart by size), among one or two other objects. Each twin gets one expression, in the phrasings
people use, drawn at random:

- group "left/right" and "top/bottom" (where it is, among its look-alikes): "the left X",
  "the X on the left", "the leftmost X"; "the top X", "the X at the top", "the topmost X"
  ("bottom", "lower" likewise);
- group "landmark" (where it is against another object Y that lies between the twins):
  "the X left of the Y", "the X to the right of the Y", "the X above the Y", "the X below the Y",
  "the X under the Y";
- group "size": "the bigger X", "the larger X", "the biggest X", "the smaller X", "the smallest X";
- group "attribute" (every other object, the fewest attributes that single it out): "the blue square".

X is the fewest attributes (always the shape; never the size for size twins) that no other object
shares; Y likewise among all the other objects. Twins' axis: the one along which their centres
are further apart.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np

from .scene_world import SIZES, SPLITS, Scene, SceneObject, _place, random_object, render

SEED = 2_750_159  # this generator's seed stream (the scene world's use 7919 and 104729)
SIZE_TWIN_RATE = 1 / 3
GROUPS = ("left/right", "top/bottom", "landmark", "size", "attribute")
POSITION_PHRASES = {
    "left": ("the left {x}", "the {x} on the left", "the leftmost {x}"),
    "right": ("the right {x}", "the {x} on the right", "the rightmost {x}"),
    "top": ("the top {x}", "the {x} at the top", "the topmost {x}", "the upper {x}"),
    "bottom": ("the bottom {x}", "the {x} at the bottom", "the lower {x}"),
}
LANDMARK_PHRASES = {
    "left": ("the {x} left of the {y}", "the {x} to the left of the {y}"),
    "right": ("the {x} right of the {y}", "the {x} to the right of the {y}"),
    "top": ("the {x} above the {y}",),
    "bottom": ("the {x} below the {y}", "the {x} under the {y}"),
}
SIZE_PHRASES = {
    "big": ("the bigger {x}", "the larger {x}", "the biggest {x}"),
    "small": ("the smaller {x}", "the smallest {x}"),
}


def _words(obj: SceneObject, others: list[SceneObject], rng: np.random.Generator, with_size: bool) -> str:
    """The fewest attributes (the shape always, the size only when allowed) that no other object
    matches, in the scene world's word order; one drawn at random among equally few."""
    extra = ("size", "colour", "texture") if with_size else ("colour", "texture")
    for count in range(len(extra) + 1):
        unique = [
            ("shape", *combo)
            for combo in combinations(extra, count)
            if all(o.describe(("shape", *combo)) != obj.describe(("shape", *combo)) for o in others)
        ]
        if unique:
            return obj.describe(unique[int(rng.integers(len(unique)))])
    return obj.describe(("shape", *extra))


def _twin_key(obj: SceneObject) -> tuple[str, str, str]:
    return obj.shape, obj.colour, obj.texture


def make_relation_scene(split: str, index: int, size: int = 128) -> Scene:
    """Relation scene `index` of a split: objects 0 and 1 are the twins, 1-2 others follow.

    Raises:
        ValueError: an unknown split or a negative index.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if index < 0:
        raise ValueError("scene index must be >= 0")
    rng = np.random.default_rng([SPLITS[split], index, SEED])
    while True:
        first = random_object(rng)
        second = replace(first)
        if rng.random() < SIZE_TWIN_RATE:
            second = replace(first, size=SIZES[1 - SIZES.index(first.size)])
        objs = [first, second]
        for _ in range(int(rng.integers(1, 3))):
            other = random_object(rng)
            while _twin_key(other) == _twin_key(first):
                other = random_object(rng)
            objs.append(other)
        boxes = _place([o.size for o in objs], size, rng)
        if boxes is not None:
            objs = [replace(o, box=b) for o, b in zip(objs, boxes)]
            return Scene(render(objs, size, rng), objs, split, index)


def _unique(obj: SceneObject, objs: list[SceneObject]) -> bool:
    """No other object has all of its attributes."""
    return all(o is obj or o.describe() != obj.describe() for o in objs)


def _between(a: SceneObject, b: SceneObject, c: SceneObject, axis: str) -> bool:
    """c's centre lies strictly between a's and b's along the axis."""
    k = 0 if axis == "x" else 1
    lo, hi = sorted((a.centre[k], b.centre[k]))
    return lo < c.centre[k] < hi


def _side(a: SceneObject, b: SceneObject, axis: str) -> str:
    (xa, ya), (xb, yb) = a.centre, b.centre
    if axis == "x":
        return "left" if xa < xb else "right"
    return "top" if ya < yb else "bottom"


def relation_expressions(scene: Scene) -> list[tuple[int, str, str]]:
    """(object index, text, group) for every object of a relation scene (see the module's phrasings)."""
    rng = np.random.default_rng([SPLITS[scene.split], scene.index, SEED, 1])
    objs = scene.objects
    twins, rest = objs[:2], objs[2:]
    size_twins = twins[0].size != twins[1].size
    out = []
    for i, obj in enumerate(twins):
        twin = twins[1 - i]
        x = _words(obj, rest, rng, with_size=not size_twins)
        if size_twins:
            phrases, group = SIZE_PHRASES[obj.size], "size"
            out.append((i, phrases[int(rng.integers(len(phrases)))].format(x=x), group))
            continue
        (xi, yi), (xj, yj) = obj.centre, twin.centre
        axis = "x" if abs(xi - xj) >= abs(yi - yj) else "y"
        where = _side(obj, twin, axis)
        landmarks = [  # another object, singled out by its attributes, between the twins along an axis
            (k, ax)
            for k, other in enumerate(rest)
            for ax in ("x", "y")
            if _between(obj, twin, other, ax) and _unique(other, objs)
        ]
        if landmarks and rng.random() < 0.5:
            k, ax = landmarks[int(rng.integers(len(landmarks)))]
            landmark = rest[k]
            y = _words(landmark, [o for o in objs if o is not landmark], rng, with_size=True)
            phrases = LANDMARK_PHRASES[_side(obj, landmark, ax)]
            out.append((i, phrases[int(rng.integers(len(phrases)))].format(x=x, y=y), "landmark"))
            continue
        phrases = POSITION_PHRASES[where]
        group = "left/right" if axis == "x" else "top/bottom"
        out.append((i, phrases[int(rng.integers(len(phrases)))].format(x=x), group))
    for k, obj in enumerate(rest, start=2):
        if not _unique(obj, objs):
            continue
        words = _words(obj, [o for o in objs if o is not obj], rng, with_size=True)
        out.append((k, f"the {words}", "attribute"))
    return out
