"""ImageNet-S classes are named, never left as WordNet ids (issue 21, item 1), and the region is the
mask's box by default (item 2)."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from falip.cli import cli
from falip.datasets import open_cls
from falip.datasets.classification import IMAGENET_NAMES, read_class_names
from falip.errors import FalipError
from test_cli import run
from test_datasets import write_image

WNID = re.compile(r"n\d{8}")


def write_imagenet_s(root, wnids=("n01440764", "n01443537", "n02085620")):
    """ImageNet-S's official layout: validation/<wnid>/*.JPEG and validation-segmentation/<wnid>/*.png,
    each mask's class id R + 256 G the 1-based index of its wnid among the sorted wnids."""
    for label, wnid in enumerate(sorted(wnids)):
        name = f"ILSVRC2012_val_{label:08d}"
        write_image(root / "validation" / wnid / f"{name}.JPEG", seed=label)
        mask = np.zeros((48, 64, 3), np.uint8)
        mask[8 + label : 30, 4 : 40 - label, 0] = label + 1
        (root / "validation-segmentation" / wnid).mkdir(parents=True)
        Image.fromarray(mask).save(root / "validation-segmentation" / wnid / f"{name}.png")
    return root


def test_the_shipped_names_are_imagenets_1000_sorted_synsets_with_clips_names():
    names = read_class_names(IMAGENET_NAMES)
    assert len(names) == 1000 and list(names) == sorted(names)
    assert all(WNID.fullmatch(w) for w in names) and not any(WNID.fullmatch(n) for n in names.values())
    # ILSVRC-2012's classes 0, 1, 151 and 999, as every ImageNet evaluation names them
    assert (names["n01440764"], names["n01443537"], names["n02085620"], names["n15075141"]) == (
        "tench",
        "goldfish",
        "Chihuahua",
        "toilet paper",
    )
    header = IMAGENET_NAMES.read_text().split("\n", 1)[0] + IMAGENET_NAMES.read_text()[:1200]
    assert "open_clip" in header and "IMAGENET_CLASSNAMES" in header


def test_imagenet_s_in_the_official_layout_is_named_and_boxed_by_default(tmp_path):
    data = open_cls("imagenet-s", root=write_imagenet_s(tmp_path))
    assert data.classes == ["tench", "goldfish", "Chihuahua"]
    # the region is the box of the class's mask pixels: rows 8+k..29, columns 4..39-k (xywh)
    assert [e.load_region() for e in data.examples] == [[4.0, 8.0 + k, 36.0 - k, 22.0 - k] for k in range(3)]
    mask = open_cls("imagenet-s", root=tmp_path, region="mask").examples[2].load_region()
    assert mask.shape == (48, 64) and mask.sum() == (30 - 10) * (40 - 2 - 4)


def test_a_class_without_a_name_is_refused(tmp_path, monkeypatch, capsys):
    write_imagenet_s(tmp_path, wnids=("n01440764", "n99999999"))
    with pytest.raises(FalipError, match=r"1 ImageNet-S class\(es\) have no name .*n99999999"):
        open_cls("imagenet-s", root=tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("n01440764 tench\n")
    with pytest.raises(FalipError, match="no name in .*names.txt"):
        open_cls("imagenet-s", root=tmp_path, names=names)
    names.write_text("n01440764 tench\nn99999999 n99999999\n")
    with pytest.raises(FalipError, match="are WordNet ids, not names"):
        open_cls("imagenet-s", root=tmp_path, names=names)
    code, _, err = run(
        ["eval", "cls", "imagenet-s", "--root", str(tmp_path), "--out", str(tmp_path / "o")],
        monkeypatch,
        capsys,
    )
    assert code == 2 and err.startswith("error: 1 ImageNet-S class(es) have no name")


def test_eval_cls_on_imagenet_s_asks_clip_for_names_and_predicts_names(tmp_path, monkeypatch):
    from falip.engine.model import FalipModel

    seen = []
    encode_text = FalipModel.encode_text

    def spy(self, texts, *args, **kwargs):
        seen.extend(texts)
        return encode_text(self, texts, *args, **kwargs)

    monkeypatch.setattr(FalipModel, "encode_text", spy)
    root = write_imagenet_s(tmp_path / "ImageNetS919")
    out = tmp_path / "run"
    args = [
        "eval",
        "cls",
        "imagenet-s",
        "--root",
        str(root),
        "--method",
        "plain,falip",
        "--templates",
        "photo",
    ]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen and not any(WNID.search(t) for t in seen)
    assert {"a photo of a tench.", "a photo of a goldfish.", "a photo of a Chihuahua."} <= set(seen)
    classes = open_cls("imagenet-s", root=root).classes
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    predicted = {classes[r["pred"]] for record in records for r in record["results"].values()}
    assert predicted and predicted <= {"tench", "goldfish", "Chihuahua"}
