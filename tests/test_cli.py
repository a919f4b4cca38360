"""The `falip` command: ranked output, one-line errors with exit status 2, and the benchmark."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from falip.cli.app import main


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
    lines = out.splitlines()
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
        (["--box", "1,2,3"], "--box needs 4 numbers"),
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
    assert message in err
    assert "Traceback" not in err
    assert message in err.strip().splitlines()[-1]


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
