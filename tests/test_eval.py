"""`falip eval`: results per example, resume after an interruption, summaries with intervals."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import falip
from falip.cli.app import cli
from falip.datasets import ClsDataset, ClsExample, RecExpression, RecImage, open_rec
from falip.errors import FalipError
from falip.evaluation import runner as runner_module
from falip.evaluation.runner import RunConfig, run_cls, run_rec
from falip.evaluation.summary import summarise


def rec_images(count=4):
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        image = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
        boxes = [[0, 0, 20, 20], [24, 4, 20, 30], [5, 22, 12, 12]]
        exprs = [
            RecExpression(f"{i}:{j}", text, [boxes[j]])
            for j, text in enumerate((f"red {i}", f"blue thing {i}"))
        ]
        out.append(RecImage(f"img{i}", (lambda im=image: im), boxes, exprs))
    return out


@pytest.fixture(scope="module")
def tiny(hf_dir):
    return {"tiny": falip.load(hf_dir)}


def config(**changes):
    base = dict(
        task="rec",
        dataset="fixture",
        models=["tiny"],
        methods=["plain", "falip", "ours-mean-q", "crop"],
        alpha=2.0,
    )
    return RunConfig(**{**base, **changes})


def test_interrupted_run_resumes_where_it_stopped_and_matches_an_uninterrupted_one(
    tiny, tmp_path, monkeypatch
):
    full = run_rec(tiny, rec_images(), config(), tmp_path / "full", progress=False)

    calls = {"n": 0}
    original = runner_module.region_features

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:  # the third image, after two are written
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(runner_module, "region_features", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_rec(tiny, rec_images(), config(), tmp_path / "cut", progress=False)
    written = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert len(written) == 4  # two images x two expressions
    with open(tmp_path / "cut" / "results.jsonl", "a") as handle:
        handle.write('{"key": "2:0", "resu')  # a line cut short by the interruption

    calls["n"] = -1000  # no more failures; count what the resumed run computes
    resumed = run_rec(tiny, rec_images(), config(), tmp_path / "cut", progress=False)
    assert calls["n"] == -1000 + 2 * 4  # only the two missing images, 4 methods each
    assert resumed == full
    records = [json.loads(line) for line in (tmp_path / "cut" / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == [f"{i}:{j}" for i in range(4) for j in range(2)]


def test_resume_with_other_settings_is_refused(tiny, tmp_path):
    run_rec(tiny, rec_images(1), config(), tmp_path, progress=False)
    with pytest.raises(FalipError, match="alpha differ"):
        run_rec(tiny, rec_images(1), config(alpha=0.5), tmp_path, progress=False)
    run_rec(tiny, rec_images(1), config(alpha=0.5), tmp_path, overwrite=True, progress=False)


def test_plain_ties_count_as_chance_and_limit_cuts_expressions(tiny, tmp_path):
    summary = run_rec(
        tiny, rec_images(), config(methods=["plain"], ties="chance"), tmp_path, limit=5, progress=False
    )
    assert summary["tiny:plain"]["correct"]["n"] == 5
    assert summary["tiny:plain"]["correct"]["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    for name in ("summary.md", "summary.csv", "summary.json"):
        assert (tmp_path / name).is_file()
    assert "| tiny:plain | 5 | 33.3 [" in (tmp_path / "summary.md").read_text()


def test_plain_ties_pick_the_first_box_as_the_authors_argmax(tiny, tmp_path):
    """Plain CLIP scores every box alike. By construction of `rec_images`, expression j of an image
    has box j as its gold box and box 0 overlaps no other box, so the first box is right exactly for
    the j = 0 expressions: 3 of the first 5 (img0:0, img1:0, img2:0), where chance would give 1/3."""
    summary = run_rec(tiny, rec_images(), config(methods=["plain"]), tmp_path, limit=5, progress=False)
    assert summary["tiny:plain"]["correct"]["accuracy"] == pytest.approx(3 / 5, abs=1e-9)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["results"]["tiny:plain"] for r in records] == [
        {"pred": 0, "correct": c} for c in (1, 0, 1, 0, 1)
    ]
    with pytest.raises(FalipError, match="unknown tie rule 'random'"):
        config(ties="random")


def test_subtract_and_ensemble_match_a_recomputation(tiny, tmp_path):
    from falip.evaluation.runner import negative_seed
    from falip.tasks.methods import region_features, text_features
    from falip.tasks.rec import sample_negatives

    images = rec_images(3)
    pool = [e.text for i in images for e in i.expressions]
    summary = run_rec(
        tiny, images, config(methods=["falip", "blur"], subtract=3, ensemble="sum"), tmp_path, progress=False
    )
    assert set(summary) == {"tiny:falip", "tiny:blur", "ensemble"}
    model = tiny["tiny"]
    scale = model.backbone.logit_scale.exp().item()
    for record in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines()):
        item = next(i for i in images if i.key == record["image"])
        own = [e.text for e in item.expressions]
        negatives = sample_negatives(pool, own, 3, negative_seed(0, record["key"]))
        assert len(negatives) == 3 and not set(negatives) & set(own)
        logits = 0
        for method in ("falip", "blur"):
            feats = region_features(model, item.image(), item.boxes, method, alpha=2.0)
            score = scale * feats @ text_features(model, [record["text"]]).T
            score = score[:, 0] - (scale * feats @ text_features(model, negatives).T).mean(1)
            assert record["results"][f"tiny:{method}"]["pred"] == int(score.argmax())
            logits = logits + score  # the authors' ensemble: raw logits summed
        assert record["results"]["ensemble"]["pred"] == int(logits.argmax())


def test_classification_top1_top5_and_worst_group(tiny, tmp_path):
    rng = np.random.default_rng(1)
    examples = [
        ClsExample(
            str(i),
            (lambda im=rng.integers(0, 255, (40, 48, 3), dtype=np.uint8): im),
            [4, 4, 20, 20],
            i % 3,
            f"g{i % 2}",
        )
        for i in range(6)
    ]
    data = ClsDataset(["a", "b", "c"], examples)
    summary = run_cls(
        tiny,
        data,
        config(task="cls", methods=["plain", "falip"], templates="photo"),
        tmp_path,
        progress=False,
    )
    assert summary["tiny:plain"]["top5"]["accuracy"] == 1.0  # 3 classes: always in the top 5
    assert summary["tiny:falip"]["top1"]["n"] == 6
    assert summary["tiny:falip"]["worst_group"]["group"] in ("g0", "g1")
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    by_hand = sum(r["results"]["tiny:falip"]["pred"] == r["label"] for r in records) / 6
    assert summary["tiny:falip"]["top1"]["accuracy"] == pytest.approx(by_hand, abs=1e-4)


def test_summary_counts_fractions_and_intervals():
    records = [{"key": str(i), "results": {"m": {"correct": c}}} for i, c in enumerate([1, 0, 0.5, 1])]
    entry = summarise(records)["m"]["correct"]
    assert entry["accuracy"] == 0.625 and entry["n"] == 4
    assert entry["ci95"][0] < 0.625 < entry["ci95"][1]


def test_cli_eval_on_the_scene_world(tmp_path):
    out = tmp_path / "rec"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "eval",
            "rec",
            "scenes",
            "--count",
            "3",
            "--method",
            "plain,falip,red_circle+falip",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "toy:red_circle+falip" in result.output and (out / "summary.md").is_file()
    again = runner.invoke(
        cli,
        [
            "eval",
            "rec",
            "scenes",
            "--count",
            "3",
            "--method",
            "plain,falip,red_circle+falip",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert again.exit_code == 0 and again.output == result.output  # resumed: nothing left, same table
    bad = runner.invoke(cli, ["eval", "rec", "scenes", "--method", "arrow", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, FalipError) and "unknown method 'arrow'" in str(bad.exception)
    listed = runner.invoke(cli, ["eval", "methods"])
    names = set(listed.output.split())
    assert {
        "falip",
        "feature-mask",
        "replace-v",
        "replace-qk",
        "pasta",
        "blur_ellipse",
        "red_circle+blur",
        "cpt",
        "red_circle+falip",
    } <= names
    assert {f"red_circle_e{e}" for e in (5, 10, 20, 30, 40, 50, 100, 150, 200)} <= names
    assert {"ours-mean-q", "ours-hard-kv"} <= names and not {
        "replace-q",
        "replace-kv",
        "red_circle_enlarged",
    } & names


def test_rec_benchmark_smoke_run_reports_same_picks():
    result = CliRunner().invoke(cli, ["bench", "--small", "--rec", "2,1", "--boxes", "3"])
    assert result.exit_code == 0, result.output
    assert "3 expressions, 3 boxes per image" in result.output and "same picks: True" in result.output
    assert "with subtract (500 negatives each)" in result.output and "pool of 600 captions" in result.output


def test_cli_subtract_alone_means_500_negatives_and_pasta_options_reach_the_run(tmp_path):
    runner = CliRunner()
    args = [
        "eval",
        "rec",
        "scenes",
        "--count",
        "2",
        "--method",
        "pasta",
        "--subtract",
        "--pasta-heads",
        "10:1,11:0",
        "--pasta-scale",
        "0.1",
        "--ensemble",
        "softmax-sum",
        "--out",
        str(tmp_path / "a"),
        "--quiet",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (saved["subtract"], saved["pasta_heads"], saved["pasta_scale"], saved["ensemble"]) == (
        500,
        "10:1,11:0",
        0.1,
        "softmax-sum",
    )
    # 2 scenes hold far fewer than 500 other expressions: each expression's real count is said and saved
    scenes = open_rec("scenes", count=2)
    every = {e.text for item in scenes for e in item.expressions}
    really = [len(every - {e.text for e in item.expressions}) for item in scenes for _ in item.expressions]
    negatives = json.loads((tmp_path / "a" / "summary.json").read_text())["ensemble"]["negatives"]
    assert negatives == {
        "asked": 500,
        "min": min(really),
        "mean": pytest.approx(sum(really) / len(really)),
        "max": max(really),
        "fewer": len(really),
        "n": len(really),
    }
    assert (
        f"Subtract: 500 negative captions asked per expression; {len(really)} of {len(really)} expressions "
        f"had fewer ({min(really)} to {max(really)}," in result.output
    )
    ten = runner.invoke(
        cli, args[:7] + ["--subtract", "--negatives", "10", "--out", str(tmp_path / "b"), "--quiet"]
    )
    assert ten.exit_code == 0 and json.loads((tmp_path / "b" / "config.json").read_text())["subtract"] == 10
    bad = runner.invoke(cli, args[:7] + ["--pasta-heads", "12:0", "--out", str(tmp_path / "c"), "--quiet"])
    assert isinstance(bad.exception, FalipError) and "does not exist" in str(bad.exception)


def test_torchrun_with_two_processes_equals_one_process_and_resumes(tmp_path):
    import subprocess
    import sys

    args = ["eval", "rec", "scenes", "--count", "5", "--method", "plain,falip", "--quiet"]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "falip",
    ]
    single = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    two = subprocess.run(
        torchrun + args + ["--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600
    )
    assert two.returncode == 0, two.stderr
    for name in ("results.jsonl", "summary.json", "summary.md"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    import re

    counts = dict(re.findall(r"rank (\d) of 2: (\d+) images", two.stderr))
    assert counts == {"0": "3", "1": "2"}, two.stderr  # five scenes: every other one per rank
    assert two.stdout.count("| system |") == 1  # the table, once
    assert not list((tmp_path / "two").glob("results.rank*"))

    # an interrupted sharded run: some records in each rank's file, nothing merged yet
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "config.json").write_bytes((tmp_path / "single" / "config.json").read_bytes())
    lines = (tmp_path / "single" / "results.jsonl").read_text().splitlines()
    (resumed / "results.rank0.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (resumed / "results.rank1.jsonl").write_text(
        "\n".join(lines[4:6]) + "\n" + lines[6][:10]
    )  # and a line cut short
    again = subprocess.run(
        torchrun + args + ["--out", str(resumed)], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr
    assert (resumed / "results.jsonl").read_bytes() == (tmp_path / "single" / "results.jsonl").read_bytes()
    assert (resumed / "summary.json").read_bytes() == (tmp_path / "single" / "summary.json").read_bytes()


def test_the_commands_that_do_not_shard_refuse_torchrun(monkeypatch, tmp_path):
    from falip.evaluation.distributed import single_process

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(FalipError, match="falip heads rank runs in one process"):
        single_process("falip heads rank")
    result = CliRunner().invoke(
        cli, ["heads", "rank", "scenes", "--count", "1", "--out", str(tmp_path), "--quiet"]
    )
    assert isinstance(result.exception, FalipError) and "start it without torchrun" in str(result.exception)


def test_an_image_without_proposals_is_scored_with_the_whole_decoded_image_as_reclip_does(tmp_path):
    """ReCLIP's `main.py`: no detection for an image -> `Box(0, 0, img.width, img.height)`, from the
    decoded image (this jsonl gives no width or height). The 64 x 48 image's gold box (0, 0, 64, 40)
    has IoU 2560 / 3072 > 0.5 with it, so both expressions count and are right; the other image has
    two proposals of which the first misses its gold box."""
    from test_datasets import write_image

    images = tmp_path / "coco"
    names = ["COCO_train2014_000000000001.jpg", "COCO_train2014_000000000002.jpg"]
    for seed, name in enumerate(names):
        write_image(images / name, size=(64, 48), seed=seed)
    lines = [
        {
            "file_name": names[0].replace(".jpg", "_5.jpg"),
            "image_id": 1,
            "ann_id": 5,
            "anns": [{"id": 5, "bbox": [0, 0, 64, 40]}],
            "sentences": [{"raw": "all of it"}, {"raw": "the lot"}],
        },
        {
            "file_name": names[1].replace(".jpg", "_7.jpg"),
            "image_id": 2,
            "ann_id": 7,
            "anns": [{"id": 7, "bbox": [30, 20, 30, 20]}],
            "sentences": [{"raw": "the right one"}],
        },
    ]
    jsonl = tmp_path / "refcoco_val.jsonl"
    jsonl.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dets = tmp_path / "refcoco_dets_dict.json"
    dets.write_text(json.dumps({"2": [[0, 0, 20, 20], [30, 20, 30, 20]]}))
    out = tmp_path / "run"
    args = [
        "eval",
        "rec",
        "reclip",
        "--annotations",
        str(jsonl),
        "--images",
        str(images),
        "--detections",
        str(dets),
        "--method",
        "plain",
        "--out",
        str(out),
        "--quiet",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    records = {
        r["key"]: r["results"]["toy:plain"]
        for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }
    assert records == {
        "1:0": {"pred": 0, "correct": 1.0},
        "1:1": {"pred": 0, "correct": 1.0},
        "2:0": {"pred": 0, "correct": 0.0},
    }
    assert not (out / "skipped.json").is_file() or "1:" not in (out / "skipped.json").read_text()
