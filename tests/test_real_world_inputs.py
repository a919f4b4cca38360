"""Issue 23: inputs as people meet them (EXIF photos, empty expressions, U+2028 in JSON lines,
decompression bombs, DataParallel checkpoints, a wrong image folder, degenerate boxes, None as text).
Each kind is tried at every entry point it reaches; expected values are computed here, not by falip."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import falip
from conftest import openai_state_dict
from falip.datasets import ClsDataset, ClsExample, RecExpression, RecImage, open_cls, open_rec, read_image
from falip.errors import FalipError
from falip.evaluation.runner import RunConfig, run_cls, run_rec
from falip.evaluation.store import ResultStore
from falip.inputs.images import open_image
from falip.tasks.methods import region_features

COCO = "COCO_train2014_000000000042.jpg"
ORIENTATION = 0x0112


def falip_cli(*args, env=None):
    """`python -m falip ARGS` in a fresh process: (exit status, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "falip", *args], capture_output=True, text=True, timeout=600, env=env
    )
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def model(hf_dir):
    return falip.load(hf_dir)


def rec_config(**changes):
    return RunConfig(
        **{
            **dict(task="rec", dataset="fixture", models=["tiny"], methods=["plain", "falip"], alpha=2.0),
            **changes,
        }
    )


def write_coco(root, annotations, images=((COCO, 64, 48),), stored=None):
    """A COCO train2014 folder (random pixels, or `stored`) and its instances.json."""
    (root / "train2014").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, width, height in images:
        pixels = stored if stored is not None else rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "train2014" / name)
    image_ids = {name: 42 + i for i, (name, _, _) in enumerate(images)}
    instances = {
        "images": [{"id": image_ids[n], "file_name": n, "width": w, "height": h} for n, w, h in images],
        "annotations": [{"id": a, "image_id": 42, "bbox": b} for a, b in annotations],
    }
    (root / "instances.json").write_text(json.dumps(instances))


def write_refs(root, refs):
    import pickle

    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))


# 1 and 2: EXIF orientation. Data sets read stored pixels (their boxes were drawn there), user images
# (API, CLI, web uploads: bytes) are turned upright, all through one door.


def exif_jpeg(path, stored):
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 degrees clockwise to display", as phones write it
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    return path


def test_a_data_sets_exif_image_is_scored_on_its_stored_pixels(tmp_path, model):
    stored = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    write_coco(tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 30, 40])])
    exif_jpeg(tmp_path / "train2014" / COCO, stored)
    write_refs(
        tmp_path,
        [
            {
                "ref_id": 1,
                "ann_id": 8,
                "image_id": 42,
                "split": "testA",
                "sentences": [{"raw": "the right one"}],
            }
        ],
    )
    data = open_rec("refer", annotations=tmp_path, images=tmp_path / "train2014", split="testA")
    assert data[0].size == (64, 48)
    # what the authors' code reads: Image.open(p).convert("RGB"), no EXIF turn
    authors = np.asarray(Image.open(tmp_path / "train2014" / COCO).convert("RGB"))
    assert authors.shape == (48, 64, 3) and np.array_equal(
        np.asarray(read_image(data[0].image, data[0].size)), authors
    )
    run_rec({"tiny": model}, data, rec_config(), tmp_path / "out", progress=False)
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    boxes = data[0].boxes
    for method in ("plain", "falip"):
        feats = region_features(model, authors, boxes, method, alpha=2.0)
        text = torch.nn.functional.normalize(model.encode_text(["a photo of the right one"]).float(), dim=-1)
        assert record["results"][f"tiny:{method}"]["pred"] == int((feats @ text.T)[:, 0].argmax())
    upright = np.rot90(authors, -1)  # the EXIF-turned picture differs, so the test can tell them apart
    assert not torch.allclose(
        region_features(model, upright, [[1, 2, 20, 20]], "falip", alpha=2.0),
        region_features(model, authors, [[1, 2, 20, 20]], "falip", alpha=2.0),
    )


def test_an_image_whose_size_differs_from_its_annotation_is_named_and_skipped(tmp_path, model):
    other = "COCO_train2014_000000000043.jpg"
    write_coco(
        tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 30, 40])], images=((COCO, 64, 48), (other, 64, 48))
    )
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(tmp_path / "train2014" / other)  # stored turned
    refs = [
        {"ref_id": 1, "ann_id": 8, "image_id": 42, "split": "testA", "sentences": [{"raw": "right"}]},
        {"ref_id": 2, "ann_id": 7, "image_id": 43, "split": "testA", "sentences": [{"raw": "left"}]},
    ]
    instances = json.loads((tmp_path / "instances.json").read_text())
    instances["annotations"].append({"id": 7, "image_id": 43, "bbox": [1, 2, 20, 20]})
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    write_refs(tmp_path, refs)
    data = open_rec("refer", annotations=tmp_path, images=tmp_path / "train2014", split="testA")
    run_rec({"tiny": model}, data, rec_config(), tmp_path / "out", progress=False)
    assert [
        json.loads(line)["key"]
        for line in (tmp_path / "out" / "results.jsonl").read_text().split("\n")
        if line
    ] == ["1:0"]
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"]
    assert len(skipped) == 1 and other in skipped[0] and "48x64" in skipped[0] and "64x48" in skipped[0]


def test_a_user_photo_is_turned_upright_at_every_entry_point(tmp_path, hf_dir, model):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (250, 0, 0)
    path = exif_jpeg(tmp_path / "phone.jpg", stored)
    decoded = np.asarray(Image.open(path).convert("RGB"))  # the stored pixels, decoded
    upright = np.rot90(decoded, -1)  # orientation 6: turned 90 degrees clockwise
    for given in (path, str(path), path.read_bytes()):  # API paths, and an upload's bytes (the web page)
        assert np.array_equal(np.asarray(open_image(given)), upright)
    box = [0, 0, 20, 20]  # on the upright picture
    expected = model.score(upright.copy(), [box], ["a red thing"])
    assert torch.allclose(
        model.score(path, [box], ["a red thing"]),
        expected,
        rtol=1e-5,
        atol=1e-5 * expected.abs().max().item(),
    )
    code, out, err = falip_cli(
        "score", str(path), "--model", str(hf_dir), "--box", "0,0,20,20", "--text", "a red thing"
    )
    assert code == 0, err
    assert f"{expected[0, 0].item():8.3f}" in out


# 4 and 11: one rule for texts, refused with one message at every entry point; a data set's bad text is
# skipped and named.


def test_texts_are_refused_identically_everywhere(tmp_path, hf_dir, model):
    from falip.web.server import run as web_run

    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(FalipError) as api:
        model.encode_text("")
    with pytest.raises(FalipError) as listed:
        model.encode_text(["a cat", "  "])
    with pytest.raises(FalipError) as scored:
        model.score(tmp_path / "x.png", [[0, 0, 10, 10]], [""])
    import base64

    url = "data:image/png;base64," + base64.b64encode((tmp_path / "x.png").read_bytes()).decode()
    with pytest.raises(FalipError) as web:
        web_run(model, {"image": url, "boxes": [[0, 0, 10, 10]], "texts": [""]})
    code, _, err = falip_cli(
        "score", str(tmp_path / "x.png"), "--model", str(hf_dir), "--box", "0,0,9,9", "--text", ""
    )
    assert code == 2
    assert (
        str(api.value)
        == str(scored.value)
        == str(web.value)
        == err.strip().removeprefix("error: ")
        == "empty text '': a text needs a visible character"
    )
    assert "empty text '  '" in str(listed.value)


@pytest.mark.parametrize("given", [None, 3, [None], ["a", b"b"], {"a": 1}])
def test_encode_text_of_what_is_not_text_is_one_line(model, given):
    with pytest.raises(FalipError) as err:
        model.encode_text(given)
    assert "\n" not in str(err.value) and "string" in str(err.value)


def test_a_data_sets_empty_expression_is_skipped_and_named(tmp_path, model):
    write_coco(tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 30, 40])])
    write_refs(
        tmp_path,
        [
            {
                "ref_id": 5,
                "ann_id": 8,
                "image_id": 42,
                "split": "testA",
                "sentences": [{"raw": "the big bird"}, {"raw": ""}, {"raw": "\u200b "}],
            }
        ],
    )
    data = open_rec("refer", annotations=tmp_path, images=tmp_path / "train2014", split="testA")
    summary = run_rec({"tiny": model}, data, rec_config(), tmp_path / "out", progress=False)
    records = [
        json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().split("\n") if line
    ]
    assert [(r["key"], r["text"]) for r in records] == [("5:0", "the big bird")]
    assert summary["tiny:plain"]["correct"]["n"] == 1
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"]
    assert (
        len(skipped) == 2
        and "ref 5 expression 1: empty text ''" in skipped[0]
        and "expression 2" in skipped[1]
    )
    with pytest.raises(FalipError, match="ref 5 expression 1: empty text"):  # --strict stops at the first
        from falip.datasets.base import strict_data

        with strict_data():
            open_rec("refer", annotations=tmp_path, images=tmp_path / "train2014", split="testA")


def test_blank_texts_in_reclip_and_transvg_are_skipped_too(tmp_path):
    write_coco(tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 30, 40])])
    anns = [{"id": 7, "bbox": [1, 2, 20, 20]}, {"id": 8, "bbox": [30, 5, 30, 40]}]
    record = {
        "file_name": COCO,
        "image_id": 42,
        "ann_id": 8,
        "anns": anns,
        "sentences": [{"raw": "right"}, {"raw": " "}],
    }
    (tmp_path / "a.jsonl").write_text(json.dumps(record) + "\n")
    data = open_rec("reclip", annotations=tmp_path / "a.jsonl", images=tmp_path / "train2014")
    assert [e.text for e in data[0].expressions] == [
        "right"
    ] and "expression 1: empty text ' '" in data.skipped[0]
    torch.save(
        [(COCO, 8, [30, 5, 30, 40], "", []), (COCO, 7, [1, 2, 20, 20], "left", [])], tmp_path / "s.pth"
    )
    data = open_rec(
        "transvg",
        annotations=tmp_path / "s.pth",
        images=tmp_path / "train2014",
        instances=tmp_path / "instances.json",
    )
    assert [e.text for e in data[0].expressions] == [
        "left"
    ] and "item 0 expression 0: empty text" in data.skipped[0]


# 5: JSON lines split on "\n" alone, in the inputs and in falip's own results files.

SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x0c", "\x1c", "\x0b"]


def test_reclip_jsonl_with_unicode_line_separators_keeps_every_record(tmp_path):
    write_coco(tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 30, 40])])
    anns = [{"id": 7, "bbox": [1, 2, 20, 20]}, {"id": 8, "bbox": [30, 5, 30, 40]}]
    sentences = ["the left\u2028one", "a\u0085b\x0cc\u2029d", "plain\x1cone\x0btwo"]
    records = [
        {"file_name": COCO, "image_id": 42, "ann_id": 7 + i % 2, "anns": anns, "sentences": [{"raw": s}]}
        for i, s in enumerate(sentences)
    ]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    assert len(text.splitlines()) > 3  # what str.splitlines would have made of it
    (tmp_path / "r.jsonl").write_text(text, encoding="utf-8")
    data = open_rec("reclip", annotations=tmp_path / "r.jsonl", images=tmp_path / "train2014")
    assert data.skipped == []
    assert [e.text for e in data[0].expressions] == [s.lower() for s in sentences]


def test_a_results_file_with_unicode_line_separators_resumes_whole(tmp_path):
    records = [{"key": f"k{i}", "text": f"x{sep}y", "results": {}} for i, sep in enumerate(SEPARATORS)]
    (tmp_path / "config.json").write_text(json.dumps({"a": 1}))
    (tmp_path / "results.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    store = ResultStore(tmp_path, {"a": 1})
    try:
        assert store.records == records and store.dropped == 0
    finally:
        store.close()


# 6: decompression bombs: one line for a user image (the limit and how to lift it), a named skip in a
# data set, the same refusal for an upload's bytes.


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "huge.png"
    Image.new("L", (14000, 13000), 128).save(path)  # the file: about 200 KB, 182 million pixels
    return path


def test_a_decompression_bomb_is_one_line_naming_the_limit_and_how_to_lift_it(bomb, hf_dir):
    limit = 2 * Image.MAX_IMAGE_PIXELS  # where Pillow refuses: falip's default limit
    code, _, err = falip_cli("score", str(bomb), "--model", str(hf_dir), "--box", "0,0,9,9", "--text", "a")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert (
        f"{14000 * 13000:,} pixels" in err
        and f"{limit:,}" in err
        and "FALIP_MAX_IMAGE_PIXELS=182000000" in err
    )
    with pytest.raises(FalipError, match="the uploaded image has 182,000,000 pixels"):
        open_image(bomb.read_bytes())


def test_the_pixel_limit_is_lifted_and_lowered_by_its_variable(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "small.png")
    monkeypatch.setenv("FALIP_MAX_IMAGE_PIXELS", "1199")
    with pytest.raises(FalipError, match=r"1,200 pixels \(40x30\), over the limit of 1,199"):
        open_image(tmp_path / "small.png")
    monkeypatch.setenv("FALIP_MAX_IMAGE_PIXELS", "1200")
    assert open_image(tmp_path / "small.png").size == (40, 30)
    monkeypatch.setenv("FALIP_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(FalipError, match="FALIP_MAX_IMAGE_PIXELS must be a whole number"):
        open_image(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own limit, lowered
    monkeypatch.setenv("FALIP_MAX_IMAGE_PIXELS", "0")  # no limit: Pillow's is lifted too
    assert open_image(tmp_path / "small.png").size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == 100  # and put back


def test_a_decompression_bomb_in_a_data_set_is_a_named_skip(bomb, tmp_path, model):
    rng = np.random.default_rng(0)
    examples = []
    for i, image in enumerate([bomb, tmp_path / "ok.png"]):
        if i:
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
        examples.append(ClsExample(str(i), image, [0, 0, 20, 20], 0))
    data = ClsDataset(["red", "blue"], examples)
    config = RunConfig(task="cls", dataset="fixture", models=["tiny"], methods=["plain"])
    run_cls({"tiny": model}, data, config, tmp_path / "out", progress=False)
    assert [
        json.loads(line)["key"]
        for line in (tmp_path / "out" / "results.jsonl").read_text().split("\n")
        if line
    ] == ["1"]
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"]
    assert len(skipped) == 1 and "huge.png" in skipped[0] and "182,000,000 pixels" in skipped[0]


# 7: wrapper prefixes that training code leaves on checkpoint keys


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_a_wrapped_openai_state_dict_loads_like_the_plain_one(tmp_path, tiny_backbone, prefix):
    state = openai_state_dict(tiny_backbone)
    torch.save(state, tmp_path / "plain.pt")
    torch.save({prefix + k: v for k, v in state.items()}, tmp_path / "wrapped.pt")
    plain, wrapped = falip.load(str(tmp_path / "plain.pt")), falip.load(str(tmp_path / "wrapped.pt"))
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(wrapped.encode_image(pixels), plain.encode_image(pixels))
    for key, value in tiny_backbone.state_dict().items():
        assert torch.equal(wrapped.backbone.state_dict()[key], value), key


def test_an_unknown_prefix_is_named(tmp_path, tiny_backbone):
    torch.save({"net." + k: v for k, v in openai_state_dict(tiny_backbone).items()}, tmp_path / "odd.pt")
    with pytest.raises(
        FalipError, match=r"the keys carry a prefix 'net\.' \(e\.g\. net\.visual\.conv1\.weight\)"
    ):
        falip.load(str(tmp_path / "odd.pt"))


# 9: a run that finds none of its images stops before scoring, saying where it looked


def test_a_refer_run_pointed_at_coco_2017_stops_with_one_line(tmp_path, hf_dir):
    write_coco(tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 30, 40])])
    write_refs(
        tmp_path,
        [{"ref_id": 1, "ann_id": 8, "image_id": 42, "split": "testA", "sentences": [{"raw": "right"}]}],
    )
    val2017 = tmp_path / "val2017"
    val2017.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(val2017 / "000000000042.jpg")  # 2017's names
    out = tmp_path / "out"
    code, _, err = falip_cli(
        "eval",
        "rec",
        "refer",
        "--annotations",
        str(tmp_path),
        "--images",
        str(val2017),
        "--split",
        "testA",
        "--model",
        str(hf_dir),
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"looked in {val2017}" in err and COCO in err
    assert not (out / "summary.md").exists() and not (out / "summary.json").exists()


def test_a_run_that_scores_nothing_fails_and_writes_no_summary(tmp_path, model):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    data = [
        RecImage(
            "broken.jpg", tmp_path / "broken.jpg", [[0, 0, 5, 5]], [RecExpression("1:0", "x", [[0, 0, 5, 5]])]
        )
    ]
    with pytest.raises(FalipError, match="nothing was scored: every example was skipped"):
        run_rec({"tiny": model}, data, rec_config(), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "summary.md").exists()
    assert "broken.jpg" in json.loads((tmp_path / "out" / "skipped.json").read_text())["skipped"][0]


def test_an_empty_summary_is_a_well_formed_table():
    from falip.evaluation.summary import markdown

    lines = markdown({}).splitlines()
    assert lines[0].count("|") == lines[1].count("|") == 3


# 10: one degenerate candidate is dropped alone and named


def test_a_zero_height_candidate_is_dropped_alone(tmp_path, model):
    write_coco(tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 30, 40]), (9, [5, 25, 10, 0])])
    write_refs(
        tmp_path,
        [
            {
                "ref_id": 1,
                "ann_id": 8,
                "image_id": 42,
                "split": "testA",
                "sentences": [{"raw": "the right one"}, {"raw": "the tall one"}],
            }
        ],
    )
    data = open_rec("refer", annotations=tmp_path, images=tmp_path / "train2014", split="testA")
    assert data[0].boxes == [[1, 2, 20, 20], [30, 5, 30, 40]]
    assert (
        len(data.skipped) == 1
        and "instances.json: image 42: annotation 9's box [5.0, 25.0, 10.0, 0.0] has no area"
        in data.skipped[0]
    )
    run_rec({"tiny": model}, data, rec_config(), tmp_path / "out", progress=False)
    keys = [
        json.loads(line)["key"]
        for line in (tmp_path / "out" / "results.jsonl").read_text().split("\n")
        if line
    ]
    assert keys == ["1:0", "1:1"]


def test_a_degenerate_gold_box_skips_only_its_expressions(tmp_path):
    write_coco(tmp_path, [(7, [1, 2, 20, 20]), (8, [30, 5, 0, 40])])
    write_refs(
        tmp_path,
        [
            {"ref_id": 1, "ann_id": 8, "image_id": 42, "split": "testA", "sentences": [{"raw": "a"}]},
            {"ref_id": 2, "ann_id": 7, "image_id": 42, "split": "testA", "sentences": [{"raw": "b"}]},
        ],
    )
    data = open_rec("refer", annotations=tmp_path, images=tmp_path / "train2014", split="testA")
    assert [e.key for e in data[0].expressions] == ["2:0"] and data[0].boxes == [[1, 2, 20, 20]]
    assert any("ref 1: the gold box [30.0, 5.0, 0.0, 40.0] has no area" in s for s in data.skipped)


def test_dogs_voc_size_is_checked(tmp_path):
    folder = tmp_path / "Images" / "n02085620-Chihuahua"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(folder / "a.jpg")
    notes = tmp_path / "Annotation" / "n02085620-Chihuahua"
    notes.mkdir(parents=True)
    (notes / "a").write_text(
        "<annotation><size><width>50</width><height>30</height></size><object><bndbox>"
        "<xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>"
    )
    example = open_cls("dogs", root=tmp_path, split="all").examples[0]
    assert example.size == (50, 30)
    with pytest.raises(FalipError, match="decoded 40x30 pixels, but its annotation gives 50x30"):
        read_image(example.image, example.size)


# 8: SigLIP's tokenizer is a SentencePiece model: without the package, the message names it, and the
# README's SigLIP install line (the `siglip` extra) brings it.

SIGLIP_SENTENCES = [
    "a photo of a red circle",
    "the blue square on the left",
    "a cat and a dog",
    "the right one",
]


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    """A tiny random `SiglipModel` with a real SiglipTokenizer (a SentencePiece model trained here)."""
    import io

    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipModel, SiglipTokenizer

    folder = tmp_path_factory.mktemp("siglip-spm") / "tiny"
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SIGLIP_SENTENCES * 20),
        model_writer=buffer,
        vocab_size=40,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    spiece = tmp_path_factory.mktemp("spm") / "spiece.model"
    spiece.write_bytes(buffer.getvalue())
    tokenizer = SiglipTokenizer(str(spiece))
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=12,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            projection_size=32,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
    )
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert (folder / "spiece.model").is_file()
    return folder


def test_siglips_sentencepiece_tokenizer_is_used_when_installed(siglip_folder):
    from transformers import SiglipTokenizer

    model = falip.load(siglip_folder)
    reference = SiglipTokenizer.from_pretrained(siglip_folder)
    expected = reference(["a red circle"], padding="max_length", max_length=12, truncation=True)["input_ids"]
    assert model.tokenize(["a red circle"]).tolist() == expected


def test_siglip_without_sentencepiece_names_the_package(siglip_folder):
    code = (
        "import sys\n"
        "sys.modules['sentencepiece'] = None  # as if it were not installed\n"
        "import falip\n"
        f"model = falip.load({str(siglip_folder)!r})\n"
        "model.encode_text(['a cat'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert (
        "FalipError" in last
        and "needs the sentencepiece package" in last
        and "pip install sentencepiece" in last
    )
    assert ".[siglip]" in last


def test_the_readmes_siglip_install_line_brings_sentencepiece():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text()
    extras = {
        name: set(re.findall(r'"([A-Za-z0-9_.-]+)', body))
        for name, body in re.findall(r"^(\w+) = \[(.*?)\]", pyproject, flags=re.M | re.S)
    }
    assert {"sentencepiece", "protobuf"} <= extras["siglip"] and {"sentencepiece", "protobuf"} <= extras[
        "test"
    ]
    assert '-e ".[siglip]"' in (root / "README.md").read_text()


# 12: float comparisons with tolerances relative to the values' size


def test_close_scales_with_the_values_and_not_per_element():
    from conftest import close

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 512)), rng.standard_normal((512, 8))
    ours = a @ b  # sums of 512 products of order 1
    reordered = np.stack([np.sum((a * b[:, j])[:, ::-1], axis=1) for j in range(8)], axis=1)  # another order
    assert not np.array_equal(ours, reordered) and close(ours, reordered, rel=1e-12)
    assert not close(ours, ours + 1e-9 * np.abs(ours).max() * (np.arange(8) == 3), rel=1e-10)
    assert close(torch.tensor([1000.0, 0.0]), torch.tensor([1000.001, 0.0005]), rel=1e-6)  # 1e-6 of 1000
    assert not close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.1]), rel=1e-2)


def test_no_test_compares_floats_with_an_absolute_tolerance_alone():
    """`allclose(..., atol=<number>)` with no rtol, or `assert_allclose(..., atol=<number>)`, misses on
    a machine whose BLAS orders sums differently when the values are of order 1 (issue 23's kind 12):
    tests use `conftest.close(a, b, rel)` or a tolerance computed from the values."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                "allclose",
                "assert_allclose",
                "isclose",
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                if isinstance(keywords.get("atol"), ast.Constant) and "rtol" not in keywords:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders
