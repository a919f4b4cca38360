"""Bad and unusual input: a one-line `FalipError` (the CLI: `error: ...`, exit 2) or the right answer,
never a traceback or a silently wrong result; results that cannot be lost or doubled."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import falip
from conftest import make_hf_dir
from falip.cli.app import cli
from falip.datasets import open_cls, open_rec
from falip.datasets.base import strict_data
from falip.errors import FalipError
from falip.evaluation.runner import RunConfig, run_cls, run_rec
from falip.evaluation.store import ResultStore, write_atomic
from falip.inputs.images import open_image
from test_datasets import write_cub, write_image
from test_eval import rec_images

IMAGE = np.random.default_rng(0).integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
BOX = [4, 4, 20, 20]


@pytest.fixture(scope="module")
def model(hf_dir):
    return falip.load(hf_dir)


@pytest.mark.parametrize("alpha, sigma", [(1e4, 1e-6), (-1e4, 1e6), (1e4, 1e6), (0.2, 1e-6)])
def test_falip_strength_at_its_bounds_gives_finite_features(model, alpha, sigma):
    """The bounds the door sets are inside what float32 computes: features at them are finite (just
    outside them, 1e308 and 1e-300 gave NaN scores before the bounds existed)."""
    feats = model.encode_regions(IMAGE, [BOX, [0, 0, 30, 20]], alpha=alpha, sigma=sigma)
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.encode_image(torch.zeros(2, 3, 16, 16)), "preprocessed pixels"),
        (lambda m: m.encode_image(torch.zeros(3, 32)), "preprocessed pixels"),
        (lambda m: m.encode_image(np.zeros((40, 48), np.uint8)), r"\(H, W, 3\) uint8"),
        (lambda m: m.encode_image([]), "no image given"),
        (lambda m: m.encode_text([]), "no text given"),
        (lambda m: m.encode_text(["a", ""]), "empty text"),
        (lambda m: m.encode_regions(IMAGE, [[4, None, 20, 20]]), "a box needs 4 numbers"),
        (lambda m: m.encode_regions(IMAGE, [[4, float("nan"), 20, 20]]), r"finite, got \[4, nan, 20, 20\]"),
        (lambda m: m.encode_regions(IMAGE, [np.ones((40, 48, 3))]), r"mask must be 2-D"),
        (lambda m: m.encode_regions(IMAGE, [BOX], layers=11), "layer 11 does not exist"),
        (lambda m: m.encode_regions(IMAGE, [BOX], layers="5"), "layers must be an int or a list"),
        (lambda m: m.encode_regions(IMAGE, [BOX], layers=[4.5]), "whole numbers"),
        (lambda m: m.encode_regions(IMAGE, [BOX], alpha=float("nan")), "alpha must be finite"),
        (lambda m: m.encode_regions(IMAGE, [BOX], alpha=float("inf")), "alpha must be finite"),
        (lambda m: m.encode_regions(IMAGE, [BOX], sigma=float("nan")), "sigma must be finite"),
        (lambda m: m.encode_regions(IMAGE, [BOX], sigma=0), "sigma must be positive"),
        (lambda m: m.encode_regions(IMAGE, [BOX], alpha=1e308), "alpha must be within"),
        (lambda m: m.encode_regions(IMAGE, [BOX], alpha=-1e5), "alpha must be within"),
        (lambda m: m.encode_regions(IMAGE, [BOX], sigma=1e-300), "sigma must be within"),
        (lambda m: m.encode_regions(IMAGE, [BOX], sigma=1e300), "sigma must be within"),
        (lambda m: m.encode_regions(IMAGE, [BOX], chunk_size=0), "chunk_size must be at least 1"),
    ],
)
def test_api_input_is_checked(model, call, message):
    with pytest.raises(FalipError, match=message):
        call(model)


def test_one_int_is_one_layer(model):
    assert torch.allclose(
        model.encode_regions(IMAGE, [BOX], layers=5, alpha=2.0),
        model.encode_regions(IMAGE, [BOX], layers=[5], alpha=2.0),
    )


def test_load_options_are_checked(hf_dir):
    with pytest.raises(FalipError, match="unknown device 'gpu'"):
        falip.load(hf_dir, device="gpu")
    with pytest.raises(FalipError, match="chunk_size must be at least 1"):
        falip.load(hf_dir, chunk_size=0)


def test_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    levels = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    seen = np.asarray(open_image(tmp_path / "deep.png"))[..., 0].astype(int)
    assert np.abs(seen - np.rint(levels / 65535 * 255)).max() <= 1  # not clipped to white
    assert seen.min() == 0 and seen.max() == 255


def test_an_exif_rotated_jpeg_is_read_as_people_see_it(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (250, 0, 0)  # left half red, right half blue, as stored
    stored[:, 20:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    seen = np.asarray(open_image(tmp_path / "turned.jpg")).astype(int)
    assert seen.shape == (40, 20, 3)  # displayed upright: the stored left half is now on top
    assert seen[5, 10, 0] > 200 and seen[5, 10, 2] < 50 and seen[35, 10, 2] > 200


def test_a_checkpoint_without_tokenizer_files_refuses_text(tmp_path):
    folder = make_hf_dir(tmp_path / "no-tokenizer")
    for f in folder.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    model = falip.load(folder)
    with pytest.raises(FalipError, match=r"no tokenizer: pass tokenizer=\.\.\. to falip\.load") as raised:
        model.encode_text(["a cat", "a dog"])
    assert "--tokenizer" not in str(raised.value)  # Python names the argument, the CLI its option
    image = tmp_path / "x.png"
    Image.fromarray(IMAGE).save(image)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "falip",
            "score",
            str(image),
            "--model",
            str(folder),
            "--box",
            "4,4,20,20",
            "--text",
            "a cat",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        result.returncode == 2
        and result.stderr.strip().startswith("error:")
        and "no tokenizer: pass --tokenizer (" in result.stderr
        and "falip.load" not in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"template": "a photo"}, "REC template needs exactly one {}"),
        ({"template": "{} and {}"}, "exactly one {}"),
        ({"template": "a {name}"}, "exactly one {}"),
        ({"templates": ["a {} of {}"]}, "class template needs exactly one {}"),
        ({"iou": float("nan")}, "iou must be finite"),
        ({"iou": 1.5}, r"iou must be in \[0, 1\)"),
        ({"alpha": float("nan")}, "alpha must be finite"),
        ({"sigma": -1.0}, "sigma must be positive"),
        ({"subtract": -1}, "subtract must be at least 0"),
        ({"ensemble": "mean"}, "unknown ensemble"),
        ({"layers": "8"}, "layers must be an int or a list"),
        ({"form": "row"}, "unknown mask form"),
    ],
)
def test_run_settings_are_checked(change, message):
    base = dict(task="rec", dataset="x", models=["m"], methods=["falip"])
    with pytest.raises(FalipError, match=message):
        RunConfig(**{**base, **change})


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "rec", "scenes", "--limit", "-1"], "limit must be at least 1"),
        (["eval", "rec", "scenes", "--count", "-5"], "count must be at least 1"),
        (["eval", "rec", "scenes", "--iou", "1.5"], "iou must be in"),
        (["eval", "rec", "scenes", "--alpha", "nan"], "alpha must be finite"),
        (["eval", "rec", "scenes", "--subtract", "--negatives", "-1"], "--negatives must be at least 1"),
        (["eval", "rec", "scenes", "--template", "a photo"], "exactly one {}"),
        (["eval", "cls", "scenes", "--templates", "a {} {}"], "exactly one {}"),
        (["eval", "rec", "scenes", "--pasta-heads", "30:0", "--method", "pasta"], "does not exist"),
    ],
)
def test_eval_options_are_checked_before_any_work(tmp_path, args, message):
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "out"), "--quiet"])
    assert isinstance(result.exception, FalipError) and message in str(result.exception), result.output


def test_cli_lines_end_in_one_error_line_and_status_2(tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(IMAGE).save(image)
    for args, message in (
        (["score", str(image), "--box", "1,,2,3,4", "--text", "a"], "--box must be comma-separated numbers"),
        (["score", str(image), "--box", "1,2,3,4", "--text", "a", "--alpha", "nan"], "alpha must be finite"),
        (["demo", "--out", str(tmp_path / "x.txt")], "--out takes a .png"),
        (["eval", "rec", "scenes", "--count", "1", "--out", str(image / "sub")], "cannot"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "falip", *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)


def test_bad_cub_annotations_are_skipped_named_and_counted_or_fatal_with_strict(tmp_path, model):
    write_cub(tmp_path)
    (tmp_path / "bounding_boxes.txt").write_text("1 2 3 20 30\n2 ten 10 30 20\n3 0 0 40 40\n")
    (tmp_path / "train_test_split.txt").write_text("1 0\n2 1\n")  # image 3 has no split entry
    (tmp_path / "image_class_labels.txt").write_text("1 1\n2 2\n3 7\n")
    data = open_cls("cub", root=tmp_path, split="all")
    assert [e.key for e in data.examples] == [
        "1"
    ]  # 2: bad box, 3: no split line (and a label classes.txt lacks)
    assert any("bounding_boxes.txt:2" in s and "number" in s for s in data.skipped)
    assert any("image 3" in s and "train_test_split.txt" in s for s in data.skipped)
    with strict_data(), pytest.raises(FalipError, match="bounding_boxes.txt:2"):
        open_cls("cub", root=tmp_path, split="all")
    summary = run_cls(
        {"m": model}, data, RunConfig("cls", "cub", ["m"], ["falip"]), tmp_path / "out", progress=False
    )
    assert summary["m:falip"]["top1"]["n"] == 1
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert (
        skipped["count"] == len(data.skipped) == 3
        and "Skipped 3 bad" in (tmp_path / "out" / "summary.md").read_text()
    )


def test_reclip_records_whose_gold_is_missing_are_skipped_and_named(tmp_path):
    write_image(tmp_path / "COCO_train2014_000000000001.jpg")
    good = {
        "file_name": "COCO_train2014_000000000001_7.jpg",
        "image_id": 1,
        "ann_id": 7,
        "anns": [{"id": 7, "bbox": [1, 2, 20, 20]}, {"id": 8, "bbox": [30, 5, 30, 40]}],
        "sentences": [{"raw": "left"}],
    }
    lines = [
        good,
        {**good, "ann_id": 99},
        {**good, "anns": [{"id": 7, "bbox": [1, "x", 20, 20]}]},
        "not json",
    ]
    (tmp_path / "split.jsonl").write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    )
    data = open_rec("reclip", annotations=tmp_path / "split.jsonl", images=tmp_path)
    assert sum(len(i.expressions) for i in data) == 1
    assert (
        len(data.skipped) == 3
        and "split.jsonl:2: its ann_id 99 is not among the image's anns" in data.skipped[0]
    )
    assert "split.jsonl:3" in data.skipped[1] and "split.jsonl:4" in data.skipped[2]


def test_corrupt_annotation_files_are_one_line_errors(tmp_path):
    (tmp_path / "refs(unc).p").write_bytes(b"not a pickle")
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(FalipError, match=r"refs\(unc\).p: not a refer annotation pickle"):
        open_rec("refer", annotations=tmp_path, images=tmp_path, split="testA")
    (tmp_path / "unc_testA.pth").write_bytes(b"garbage")
    with pytest.raises(FalipError, match="unc_testA.pth: not a TransVG split file"):
        open_rec(
            "transvg",
            annotations=tmp_path / "unc_testA.pth",
            images=tmp_path,
            instances=tmp_path / "instances.json",
        )


def test_a_bad_box_or_mask_skips_its_example_with_its_name(tmp_path, model):
    images = rec_images(2)
    images[1].boxes[1] = [100, 100, 5, 5]  # wholly outside the 48 x 40 image
    config = RunConfig("rec", "fixture", ["m"], ["falip"])
    summary = run_rec({"m": model}, images, config, tmp_path / "rec", progress=False)
    assert summary["m:falip"]["correct"]["n"] == 2  # image 0's two expressions; image 1 is left out
    note = json.loads((tmp_path / "rec" / "skipped.json").read_text())["skipped"][0]
    assert note.startswith("image img1") and "region 1" in note and "wholly outside" in note
    with strict_data(), pytest.raises(FalipError, match="image img1"):
        run_rec({"m": model}, images, config, tmp_path / "rec2", progress=False)


def test_a_damaged_middle_line_is_dropped_alone_and_records_are_never_doubled(tmp_path):
    config = {"task": "x"}
    store = ResultStore(tmp_path, config)
    store.add([{"key": str(i), "v": i} for i in range(4)])
    store.close()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    lines[1] = lines[1][:7]  # damaged in the middle
    lines.append(lines[2])  # and a line written twice
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    store = ResultStore(tmp_path, config)
    assert [r["key"] for r in store.records] == ["0", "2", "3"] and store.dropped == 2
    store.add([{"key": "2", "v": 2}, {"key": "1", "v": 1}])
    store.close()
    keys = [json.loads(line)["key"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert keys == ["0", "2", "3", "1"]


def test_a_damaged_config_is_a_clear_error(tmp_path):
    ResultStore(tmp_path, {"task": "x"}).close()
    (tmp_path / "results.jsonl").write_text('{"key": "a"}\n')
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(FalipError, match="config.json is damaged"):
        ResultStore(tmp_path, {"task": "x"})


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path, model):
    ready, release = tmp_path / "ready", tmp_path / "release"
    holder = (
        f"import pathlib, time\nfrom falip.evaluation.store import ResultStore\n"
        f"store = ResultStore(pathlib.Path({str(tmp_path / 'out')!r}), {{'task': 'x'}})\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        f"while not pathlib.Path({str(release)!r}).exists():\n    time.sleep(0.05)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", holder])
    try:
        for _ in range(1200):
            if ready.exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the first run never started"
        with pytest.raises(FalipError, match=f"in use by another run \\(pid {child.pid} on "):
            run_rec(
                {"m": model},
                rec_images(1),
                RunConfig("rec", "x", ["m"], ["falip"]),
                tmp_path / "out",
                progress=False,
            )
    finally:
        release.touch()
        child.wait(timeout=60)
    run_rec(
        {"m": model},
        rec_images(1),
        RunConfig("rec", "x", ["m"], ["falip"]),
        tmp_path / "out",
        overwrite=True,
        progress=False,
    )


def test_a_failed_write_leaves_the_old_summary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    write_atomic(target, '{"old": 1}\n')

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(FalipError, match="No space left on device"):
        write_atomic(target, '{"new": 2}\n')
    monkeypatch.undo()
    assert target.read_text() == '{"old": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
