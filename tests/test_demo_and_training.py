"""The toy training script (a smoke run), and `falip demo` on a tiny model."""

import sys

import numpy as np
from PIL import Image

import falip
from falip.cli import main
from falip.demo import run_demo
from falip.scenes import make_scene
from falip.scenes.train import VALUES, TrainConfig, presence, train


def test_training_smoke_run_saves_a_loadable_checkpoint(tmp_path):
    cfg = TrainConfig(steps=3, batch=6, width=32, layers=2, heads=2, text_width=32, text_layers=1, text_heads=1,
                      image_size=32, patch=8, minutes=5.0)
    summary = train(cfg, tmp_path / "toy", log=lambda _: None)
    assert summary["steps_done"] == 3 and np.isfinite(summary["final_loss"]) and np.isfinite(summary["final_presence_loss"])
    from safetensors.torch import load_file
    assert not any("presence" in name for name in load_file(tmp_path / "toy" / "model.safetensors"))
    model = falip.load(tmp_path / "toy")
    assert model.depth == 2 and model.backbone.cfg.vision.grid == 4
    ids = model.tokenize(["a photo of the left red circle"])
    assert model.tokenizer.hf.convert_ids_to_tokens(ids[0, 1:5].tolist()) == ["a</w>", "photo</w>", "of</w>", "the</w>"]
    assert model.encode_text(["a photo of a red circle"]).shape == (1, 32)


def test_presence_targets_name_what_the_objects_have():
    scene = make_scene("val", 3, objects=3)
    held = {v for v, on in zip(VALUES, presence(scene)) if on}
    assert held == {getattr(o, a) for o in scene.objects for a in ("shape", "colour", "size", "texture")}
    assert 4 <= len(held) < len(VALUES)


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

    code, out = run("--image", str(tmp_path / "img.png"), "--box", "0,0,20,20", "--box", "30,10,20,20", "--text", "a cat", "--labels", "cat,dog")
    assert code == 0, out.err
    assert "expression: 'a cat'" in out.out and (tmp_path / "d.png").is_file()
    code, out = run("--image", str(tmp_path / "none.png"), "--box", "0,0,5,5", "--text", "x")
    assert code == 2 and out.err.strip().endswith(f"image not found: {tmp_path / 'none.png'}")
    code, out = run("--image", str(tmp_path / "img.png"), "--box", "100,0,5,5", "--text", "x")
    assert code == 2 and "box lies wholly outside the 60x40 image" in out.err
    code, out = run("--image", str(tmp_path / "img.png"), "--box", "0,0,5,5", "--text", " ")
    assert code == 2 and "non-empty --text" in out.err


def test_shape_pilot_smoke_run():
    from falip.scenes.train import shape_pilot

    out = shape_pilot(steps=2, batch=4, image_size=32, patch=8, width=32, layers=2, test_scenes=10, log=lambda _: None)
    assert out["images_seen"] == 8 and 0.0 <= out["test_shape_accuracy"] <= 1.0
    assert out["final_loss"] > 0 and out["chance_loss"] == 1.6094
