"""The scene world: seeded, disjoint splits, exact boxes, expressions that single out their target."""

import numpy as np
import pytest

from falip.datasets.scene_world import ATTRIBUTES, BLOCK, COLOURS, LATTICE, class_names, make_scene


def test_scenes_are_a_pure_function_of_split_and_index():
    a, b = make_scene("test", 5), make_scene("test", 5)
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert a.expressions() == b.expressions() == a.expressions()
    assert not np.array_equal(make_scene("train", 5).image, a.image)
    assert not np.array_equal(make_scene("val", 5).image, a.image)
    assert not np.array_equal(make_scene("test", 6).image, a.image)


def test_object_counts_and_errors():
    assert len(make_scene("val", 1, objects=3).objects) == 3
    assert all(1 <= len(make_scene("val", i).objects) <= 4 for i in range(20))
    with pytest.raises(ValueError):
        make_scene("dev", 0)
    with pytest.raises(ValueError):
        make_scene("test", -1)
    assert len(class_names()) == 30 and len(set(class_names())) == 30


def test_boxes_are_exact():
    """Every pixel of an object's colour lies in its box, and the coloured pixels span the box."""
    checked = 0
    for index in range(40):
        scene = make_scene("test", index, objects=(1, 3))
        for obj in scene.objects:
            if obj.texture != "plain" or sum(o.colour == obj.colour for o in scene.objects) > 1:
                continue
            dist = np.abs(scene.image.astype(int) - np.array(COLOURS[obj.colour])).sum(-1)
            ys, xs = np.nonzero(dist < 40)
            x, y, w, h = obj.box
            assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
            assert (
                xs.min() <= x + 2.5
                and xs.max() >= x + w - 2.5
                and ys.min() <= y + 2.5
                and ys.max() >= y + h - 2.5
            )
            checked += 1
    assert checked > 20


def _matches(obj, words):
    return all(w in (getattr(obj, a) for a in ATTRIBUTES) for w in words)


def test_expressions_single_out_their_target():
    kinds = set()
    for index in range(80):
        scene = make_scene("test", index, objects=(2, 4))
        for target, text, kind in scene.expressions():
            words = text.split()[1:]
            kinds.add(kind)
            if kind == "attribute":
                hits = [i for i, o in enumerate(scene.objects) if _matches(o, words)]
                assert hits == [target], text
            else:
                where, words = words[0], words[1:]
                hits = [i for i, o in enumerate(scene.objects) if _matches(o, words)]
                assert len(hits) == 2 and target in hits, text
                other = scene.objects[hits[0] if hits[1] == target else hits[1]]
                (tx, ty), (ox, oy) = scene.objects[target].centre, other.centre
                assert {"left": tx < ox, "right": tx > ox, "top": ty < oy, "bottom": ty > oy}[where], text
    assert kinds == {"attribute", "relational"}


def test_captions_name_every_object():
    rng = np.random.default_rng(0)
    for index in range(20):
        scene = make_scene("train", index)
        caption = scene.caption(rng)
        assert caption.startswith("a photo of ")
        for obj in scene.objects:
            assert obj.shape in caption
        assert caption.count(" and ") == len(scene.objects) - 1


def _block_corner(obj, cell):
    """The top-left cell of the block the object would be centred in, in cells (whole on the lattice)."""
    span = BLOCK[obj.size]
    return obj.centre[0] / cell - span / 2, obj.centre[1] / cell - span / 2


def test_objects_sit_centred_in_separate_lattice_blocks():
    """Small objects fill a 2 x 2 block of the 8 x 8 lattice (16 px cells at 128 px), big ones 3 x 3,
    blocks never share a cell; `lattice=False` places them off the lattice."""
    cell = 128 / LATTICE
    off = 0
    for index in range(30):
        taken = np.zeros((LATTICE, LATTICE), int)
        for obj in make_scene("val", index).objects:
            col, row = _block_corner(obj, cell)
            assert abs(col - round(col)) < 0.01 and abs(row - round(row)) < 0.01, obj
            assert obj.box[2] < BLOCK[obj.size] * cell
            taken[round(row) : round(row) + BLOCK[obj.size], round(col) : round(col) + BLOCK[obj.size]] += 1
        assert taken.max() == 1
        off += sum(
            abs(c - round(c)) > 0.05
            for obj in make_scene("val", index, lattice=False).objects
            for c in _block_corner(obj, cell)
        )
    assert off > 20
