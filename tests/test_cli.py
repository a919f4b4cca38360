"""The `falip` command: ranked output, one-line errors with exit status 2, and the benchmark."""

import re
import subprocess
import sys

import click
import numpy as np
import pytest
from PIL import Image

from falip.cli.app import cli, main


def run(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["falip", *argv])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def image_path(tmp_path):
    arr = np.zeros((40, 48, 3), np.uint8)
    arr[5:25, 10:30] = (200, 30, 30)
    path = tmp_path / "scene.png"
    Image.fromarray(arr).save(path)
    return path


def test_score_ranks_every_region_for_every_text(hf_dir, image_path, tmp_path, monkeypatch, capsys):
    mask = np.zeros((40, 48), np.uint8)
    mask[20:40, 0:24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code, out, err = run(
        [
            "score",
            str(image_path),
            "--model",
            str(hf_dir),
            "--box",
            "10,5,20,20",
            "--box",
            "0,0,48,40",
            "--mask",
            str(tmp_path / "mask.png"),
            "--text",
            "a red square",
            "--text",
            "black",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    said, lines = out.splitlines()[:2], out.splitlines()[2:]
    assert said[0] == f"model: {hf_dir}"
    assert said[1] == (
        "FALIP setting: alpha 0.2, sigma 100, layers 4,5 (0-based; the last third), form cls: "
        "the paper's setting"
    )
    assert lines[0] == "'a red square'" and lines[4] == "'black'"
    ranked = lines[1:4]
    assert [line.split()[0] for line in ranked] == ["1.", "2.", "3."]
    scores = [float(line.split()[1]) for line in ranked]
    assert scores == sorted(scores, reverse=True)
    assert {line.split(maxsplit=2)[2] for line in ranked} == {
        "box 10,5,20,20",
        "box 0,0,48,40",
        f"mask {tmp_path / 'mask.png'}",
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--box", "1,2,3"], "error: --box needs 4 numbers, got '1,2,3'"),
        (["--box", "100,100,5,5"], "error: region 0: box lies wholly outside the 48x40 image"),
        (["--box", "1,2,0,5"], "error: region 0: box has zero"),
        (["--box", "1,2,5,5", "--layers", "40"], "error: layer 40 does not exist"),
        (["--box", "1,2,5,5", "--text", "  "], "error: empty text"),
    ],
)
def test_bad_input_is_one_line_on_stderr(hf_dir, image_path, monkeypatch, capsys, args, message):
    argv = ["score", str(image_path), "--model", str(hf_dir), *args]
    if "--text" not in args:
        argv += ["--text", "x"]
    code, out, err = run(argv, monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["score"], "error: missing argument 'IMAGE'."),
        (["score", "x.png", "--nope"], "error: no such option '--nope'."),
        (["serve", "--port", "abc"], "error: invalid value for '--port': 'abc' is not a valid integer"),
        (["demo", "--box", "1,2,3,x"], "error: --box must be comma-separated numbers, got '1,2,3,x'"),
        (["nosuch"], "error: no such command 'nosuch'."),
        (["eval", "rec", "scenes", "--method", "falip"], "error: missing option '--out'."),
    ],
)
def test_clicks_own_usage_errors_are_one_line_error_with_status_2(argv, message, monkeypatch, capsys):
    code, out, err = run(argv, monkeypatch, capsys)
    assert code == 2 and out == "" and "Usage:" not in err
    assert err.strip().splitlines() == [err.strip()] and err.strip().startswith(message)


def test_missing_image_and_model(hf_dir, tmp_path, monkeypatch, capsys):
    code, _, err = run(
        ["score", str(tmp_path / "nope.png"), "--model", str(hf_dir), "--box", "0,0,5,5", "--text", "x"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and err.strip() == f"error: image not found: {tmp_path / 'nope.png'}"
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code, _, err = run(
        [
            "score",
            str(tmp_path / "x.png"),
            "--model",
            str(tmp_path / "m.pt"),
            "--box",
            "0,0,5,5",
            "--text",
            "x",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2 and err.strip() == f"error: checkpoint not found: {tmp_path / 'm.pt'}"


def test_bench_smoke_prints_the_three_approaches_and_their_agreement():
    """What the benchmark prints and computes, never how fast this machine is."""
    from falip.backbones.clip import VisionConfig
    from falip.evaluation import bench

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "falip",
            "bench",
            "--small",
            "--regions",
            "1,4",
            "--images",
            "1",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("FALIP setting: alpha 0.2, sigma 100, layers 4,5 (0-based; the last third)")
    assert [
        line.split()[0] for line in out.stdout.splitlines() if line.strip() and line.split()[0].isdigit()
    ] == ["1", "4"]
    small = VisionConfig(
        width=64, layers=6, heads=2, patch_size=16, image_size=64, mlp_dim=128, output_dim=32
    )
    lines = []
    rows = bench.run((1, 4), images=1, vision=small, repeats=1, log=lines.append)
    assert [r.regions for r in rows] == [1, 4] and lines == [bench.format_row(r) for r in rows]
    for row in rows:
        assert min(row.authors, row.batched, row.engine) > 0
        assert row.vs_authors == row.engine / row.authors and row.vs_batched == row.engine / row.batched
        assert row.diff_engine <= 1e-5 and row.diff_batched <= 1e-5  # the same features, whatever the speed
    assert (
        rows[1].work_ratio > rows[0].work_ratio >= 1.0
    )  # FLOPs are counted, not timed: more regions, more sharing


def test_unleash_bench_smoke():
    from falip.backbones.clip import VisionConfig
    from falip.evaluation import bench

    small = VisionConfig(
        width=64, layers=6, heads=2, patch_size=16, image_size=64, mlp_dim=128, output_dim=32
    )
    row = bench.run_unleash_workload(3, images=1, vision=small, repeats=1)
    assert row.regions == 3 and row.prompt > 0 and row.unleash > 0 and row.cost == row.prompt / row.unleash
    assert "unleash costs" in bench.format_unleash_row(row, small)


def test_eval_bench_smoke():
    from falip.backbones.clip import TextConfig, VisionConfig
    from falip.evaluation import bench

    small = VisionConfig(
        width=64, layers=6, heads=2, patch_size=16, image_size=64, mlp_dim=128, output_dim=32
    )
    text = TextConfig(
        width=32, layers=1, heads=1, context_length=16, vocab_size=600, mlp_dim=64, output_dim=32
    )
    row = bench.run_eval_workload(2, 3, small, text, repeats=1)
    assert row.expressions == 15 and row.eval_rate > 0 and row.compute_rate > 0  # 7 + 8 expressions
    assert (
        row.share == row.eval_rate / row.compute_rate
        and "% of the compute alone" in bench.format_eval_row(row, 3, 2)
    )


def _commands(command, path=()):
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


@pytest.mark.parametrize("name, command", list(_commands(cli)), ids=lambda v: v if isinstance(v, str) else "")
def test_each_commands_help_mentions_only_its_own_options(name, command):
    """A help text that names an option the command lacks sends the reader astray (`eval pointcloud`
    once spoke of --ensemble)."""
    ctx = click.Context(command, info_name=f"falip {name}")
    own = {opt for param in command.get_params(ctx) for opt in param.opts + param.secondary_opts}
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command.get_help(ctx)))
    assert mentioned and mentioned <= own, sorted(mentioned - own)


def test_pointcloud_offers_neither_ensemble_nor_the_region_methods_options():
    ctx = click.Context(cli.commands["eval"].commands["pointcloud"])
    own = {opt for param in ctx.command.get_params(ctx) for opt in param.opts}
    assert not own & {"--ensemble", "--pasta-scale", "--pasta-heads", "--unleash-layers", "--unleash-heads"}


@pytest.mark.parametrize(
    "task, defaults",
    [
        ("rec", {"scenes": "test"}),
        (
            "cls",
            {
                "cub": "test",
                "dogs": "test",
                "waterbirds": "test",
                "imagenet-s": "validation",
                "scenes": "test",
            },
        ),
        ("pointcloud", {"modelnet40": "test", "scanobjectnn": "test"}),
    ],
)
def test_split_help_names_each_data_sets_default(task, defaults):
    command = cli.commands["eval"].commands[task]
    split = next(p for p in command.params if p.name == "split")
    for dataset, default in defaults.items():
        assert f"{dataset} {default}" in split.help
    if task == "rec":
        assert "required for refer" in split.help and "reclip, transvg: the annotation file" in split.help


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: what is checked here must be refused before any load."""
    import falip.engine.model

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(falip.engine.model, "load", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["demo", "--image", "IMG", "--box", "100,100,5,5", "--text", "x"],
            "region 0: box lies wholly outside",
        ),
        (["demo", "--image", "IMG", "--box", "1,1,5,5"], "--image needs a non-empty --text"),
        (["demo", "--image", "IMG", "--text", "x"], "--image needs at least one --box"),
        (["demo", "--out", "demo.txt"], "--out takes a .png/.jpg/.jpeg/.webp file"),
        (["demo", "--sigma", "0"], "sigma must be"),
        (["explain", "IMG", "--out", "d"], "IMAGE needs --box"),
        (["explain", "IMG", "--box", "0,0,0,5", "--out", "d"], "region 0: box has zero"),
        (["explain", "--prompt", "arrow", "--out", "d"], "unknown visual prompt 'arrow'"),
        (["explain", "--head", "x", "--out", "d"], "--head"),
        (["explain", "--alpha", "nan", "--out", "d"], "alpha must be finite"),
        (["score", "IMG", "--box", "60,0,5,5", "--text", "x"], "region 0: box lies wholly outside the 48x40"),
        (["score", "IMG", "--box", "1,1,5,5", "--text", "x", "--sigma", "-1"], "sigma must be"),
        (
            ["score", "IMG", "--box", "1,1,5,5", "--text", "x", "--layers", "11-8"],
            "or ranges (8,9,10,11 or 8-11)",
        ),
        (
            ["eval", "rec", "scenes", "--count", "1", "--method", "falp", "--out", "o"],
            "unknown method 'falp'; choose one of plain, falip,",
        ),
        (
            ["eval", "cls", "scenes", "--count", "1", "--method", "falip,reclip", "--out", "o"],
            "for `falip eval rec` only",
        ),
    ],
)
def test_inputs_are_checked_before_the_model_loads(
    argv, message, image_path, no_model_load, monkeypatch, capsys
):
    argv = [str(image_path) if a == "IMG" else a for a in argv]
    code, out, err = run(argv, monkeypatch, capsys)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert "was loaded" not in err


def test_unknown_methods_are_named_with_what_each_task_takes(no_model_load, monkeypatch, capsys):
    rec = run(
        ["eval", "rec", "scenes", "--count", "1", "--method", "falp", "--out", "o"], monkeypatch, capsys
    )
    cls = run(
        ["eval", "cls", "scenes", "--count", "1", "--method", "falp", "--out", "o"], monkeypatch, capsys
    )
    assert rec[2].rstrip().endswith(", reclip, <method>+relations")  # the resolver's methods are REC's alone
    assert "reclip" not in cls[2] and "red_circle+falip" in cls[2]


def score_argv(hf_dir, image_path, *extra) -> list[str]:
    """`falip score` of one box and one text on the tiny Hugging Face model, with `extra` options."""
    return ["score", str(image_path), "--model", str(hf_dir), "--box", "1,1,20,20", "--text", "x", *extra]


def test_layers_take_the_ranges_every_command_prints(hf_dir, image_path, monkeypatch, capsys):
    listed = run(score_argv(hf_dir, image_path, "--layers", "0,1,2,5"), monkeypatch, capsys)
    ranged = run(score_argv(hf_dir, image_path, "--layers", "0-2,5"), monkeypatch, capsys)
    assert listed[0] == ranged[0] == 0 and listed[1] == ranged[1]
    assert "layers 0,1,2,5 (0-based)" in ranged[1]
    contiguous = run(score_argv(hf_dir, image_path, "--layers", "2-5"), monkeypatch, capsys)
    assert "layers 2-5 (0-based)" in contiguous[1]  # printed as typed, and typed as printed


def test_a_layer_the_model_lacks_is_refused_before_any_setting_is_printed(
    hf_dir, image_path, monkeypatch, capsys
):
    code, out, err = run(score_argv(hf_dir, image_path, "--layers", "40"), monkeypatch, capsys)
    assert code == 2 and err == "error: layer 40 does not exist: the model has 6 layers (0..5)\n"
    assert "FALIP setting" not in out  # it used to print "layers 4" (40 mod 6) first


def test_no_cuda_is_said_with_the_option_on_the_command_line_and_the_argument_in_python(
    hf_dir, image_path, monkeypatch, capsys
):
    import torch

    import falip

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(score_argv(hf_dir, image_path, "--device", "cuda"), monkeypatch, capsys)
    assert (
        code == 2
        and err.startswith("error: CUDA was asked for")
        and err.rstrip().endswith("use --device cpu")
    )
    with pytest.raises(falip.FalipError, match=r"use device='cpu'$"):
        falip.load(hf_dir, device="cuda")
