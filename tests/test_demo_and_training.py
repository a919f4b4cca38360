"""The toy training script (a smoke run), and `falip demo` on a tiny model."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import falip
from conftest import close
from falip.cli.app import main
from falip.datasets.scene_world import ATTRIBUTE_VALUES, layout, make_scene
from falip.toy.train import (
    VALUES,
    TrainConfig,
    build_tokenizer,
    contrast_pair,
    object_loss,
    object_targets,
    presence,
    train,
    vocabulary_corpus,
)
from falip.viz.demo import run_demo


def test_training_smoke_run_saves_a_loadable_checkpoint(tmp_path):
    cfg = TrainConfig(
        steps=3,
        batch=6,
        width=32,
        layers=2,
        heads=2,
        text_width=32,
        text_layers=1,
        text_heads=1,
        image_size=32,
        patch=8,
        minutes=5.0,
    )
    summary = train(cfg, tmp_path / "toy", log=lambda _: None)
    assert summary["steps_done"] == 3
    assert all(np.isfinite(summary[k]) for k in ("final_loss", "final_presence_loss", "final_object_loss"))
    from safetensors.torch import load_file

    assert not any(
        "presence" in name or "object" in name for name in load_file(tmp_path / "toy" / "model.safetensors")
    )
    model = falip.load(tmp_path / "toy")
    assert model.depth == 2 and model.backbone.cfg.vision.grid == 4
    ids = model.tokenize(["a photo of the left red circle"])
    assert model.tokenizer.hf.convert_ids_to_tokens(ids[0, 1:5].tolist()) == [
        "a</w>",
        "photo</w>",
        "of</w>",
        "the</w>",
    ]
    assert model.encode_text(["a photo of a red circle"]).shape == (1, 32)


def test_tokenizer_is_the_same_on_every_build_and_keeps_words_whole():
    """The BPE trainer numbers some tokens in hash-map order; a seeded run must not depend on it."""
    first, second, third = (build_tokenizer(16) for _ in range(3))
    assert first.get_vocab() == second.get_vocab() == third.get_vocab()
    words = vocabulary_corpus()[0].split()
    assert len(words) > 30 and all(len(first.tokenize(w)) == 1 for w in words)


def test_presence_targets_name_what_the_objects_have():
    scene = make_scene("val", 3, objects=3)
    held = {v for v, on in zip(VALUES, presence(scene)) if on}
    assert held == {getattr(o, a) for o in scene.objects for a in ("shape", "colour", "size", "texture")}
    assert 4 <= len(held) < len(VALUES)


def test_contrast_twin_changes_one_attribute_of_one_object_on_the_same_background():
    objects = layout("train", 11, objects=3)
    first, second, (target, attribute) = contrast_pair(
        "train", 11, objects, 128, np.random.default_rng(0), shape_rate=0.5
    )
    assert first.objects == objects and attribute in ("shape", "texture")
    changed = [i for i, (a, b) in enumerate(zip(first.objects, second.objects)) if a != b]
    assert changed == [target] and getattr(first.objects[target], attribute) != getattr(
        second.objects[target], attribute
    )
    x, y, w, h = (int(v) for v in objects[target].box)
    differs = np.any(first.image != second.image, axis=2)
    assert differs.any() and not differs[: max(0, y - 1)].any() and not differs[y + h + 2 :].any()


def test_object_targets_cover_each_objects_lattice_block():
    scene = make_scene("val", 4, objects=3)
    cells, labels = object_targets(scene, grid=8, slots=4)
    for obj, where, what in zip(scene.objects, cells, labels):
        rows, cols = np.nonzero(where.reshape(8, 8))
        span = {"small": 2, "big": 3}[obj.size]
        assert len(rows) == span * span and np.ptp(rows) == np.ptp(cols) == span - 1
        x, y, w, h = obj.box
        assert (
            cols.min() * 16 <= x + w / 2 <= (cols.max() + 1) * 16
            and rows.min() * 16 <= y + h / 2 <= (rows.max() + 1) * 16
        )
        assert [values[i] for values, i in zip(ATTRIBUTE_VALUES.values(), what)] == [
            getattr(obj, a) for a in ATTRIBUTE_VALUES
        ]
    assert not cells[3].any() and (labels[3] == -100).all()


def test_object_loss_reads_only_the_tokens_in_each_box():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, len(VALUES))
    tokens = torch.randn(2, 16, 8)
    cells = torch.zeros(2, 2, 16)
    cells[0, 0, [1, 2]] = 1
    cells[1, 0, [5]] = 1  # slot 1 of both images is empty
    labels = torch.tensor([[[0, 1, 0, 1], [-100] * 4], [[4, 5, 1, 0], [-100] * 4]])
    pooled = torch.stack([tokens[0, [1, 2]].mean(0), tokens[1, 5]])
    parts = head(pooled).split([len(v) for v in ATTRIBUTE_VALUES.values()], dim=-1)
    expected = torch.stack(
        [torch.nn.functional.cross_entropy(p, labels[:, 0, a]) for a, p in enumerate(parts)]
    ).mean()
    loss = object_loss(head, tokens, cells, labels)
    assert close(loss, expected)
    elsewhere = tokens.clone()
    elsewhere[:, [0, 3, 4, 6]] += 10.0
    assert close(object_loss(head, elsewhere, cells, labels), expected)


def test_demo_moves_last_layer_attention_into_the_box(hf_dir, tmp_path):
    model = falip.load(hf_dir)
    result = run_demo(model, tmp_path / "demo.png", seed=1, alpha=5.0)
    picture = Image.open(result.picture)
    assert picture.width > 3 * 384 and len(result.scores) == len(result.labels) >= 3
    plain, focused = result.attention_inside
    assert 0 <= plain < focused <= 1


def test_demo_with_user_inputs_and_its_errors(hf_dir, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(tmp_path / "img.png")
    base = ["falip", "demo", "--model", str(hf_dir), "--out", str(tmp_path / "d.png")]

    def run(*args):
        monkeypatch.setattr(sys, "argv", [*base, *args])
        try:
            main()
            return 0, capsys.readouterr()
        except SystemExit as exc:
            return exc.code, capsys.readouterr()

    code, out = run(
        "--image",
        str(tmp_path / "img.png"),
        "--box",
        "0,0,20,20",
        "--box",
        "30,10,20,20",
        "--text",
        "a cat",
        "--labels",
        "cat,dog",
    )
    assert code == 0, out.err
    assert "expression: 'a cat'" in out.out and (tmp_path / "d.png").is_file()
    assert (
        "FALIP setting: alpha 0.2, sigma 100, layers 4,5 (0-based; the last third), form cls: "
        "the paper's setting\n" in out.out
    )
    code, out = run("--image", str(tmp_path / "none.png"), "--box", "0,0,5,5", "--text", "x")
    assert code == 2 and out.err.strip().endswith(f"image not found: {tmp_path / 'none.png'}")
    code, out = run("--image", str(tmp_path / "img.png"), "--box", "100,0,5,5", "--text", "x")
    assert code == 2 and "box lies wholly outside the 60x40 image" in out.err
    code, out = run("--image", str(tmp_path / "img.png"), "--box", "0,0,5,5", "--text", " ")
    assert code == 2 and "non-empty --text" in out.err


def test_shape_pilot_smoke_run():
    from falip.toy.train import shape_pilot

    out = shape_pilot(
        steps=2, batch=4, image_size=32, patch=8, width=32, layers=2, test_scenes=10, log=lambda _: None
    )
    assert out["images_seen"] == 8 and 0.0 <= out["test_shape_accuracy"] <= 1.0
    assert out["final_loss"] > 0 and out["chance_loss"] == 1.6094


def test_toy_demo_says_its_tuned_setting_and_why(tmp_path, monkeypatch, capsys):
    """The demo runs the toy's tuned setting, not the paper's, and says so with the measured reason."""
    metrics = json.loads((Path(falip.__file__).parent / "toy" / "weights" / "metrics.json").read_text())
    tuned, share = metrics["tuned"]["rec"], metrics["attention_in_box"]
    monkeypatch.setattr(sys, "argv", ["falip", "demo", "--out", str(tmp_path / "demo.png")])
    try:
        main()
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model: the embedded toy CLIP") and "not OpenAI's CLIP" in out[0]
    layers = tuned["layers"]
    assert layers == list(range(layers[0], layers[-1] + 1))
    assert out[1] == (
        f"FALIP setting: alpha {tuned['alpha']:g}, sigma {tuned['sigma']:g}, layers {layers[0]}-{layers[-1]} "
        "(0-based), form cls (the toy model's setting, tuned on validation scenes (metrics.json): at the "
        f"paper's alpha 0.2 FALIP moves this small model's last-layer [CLS] attention on the box only from "
        f"{round(100 * share['plain CLIP'])}% to {round(100 * share['FALIP defaults'])}%; tuned, to "
        f"{round(100 * share['FALIP tuned for rec'])}%)"
    )
    assert (tmp_path / "demo.png").is_file()
