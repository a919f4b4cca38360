"""`falip reproduce N --data scenes`: every table of the paper runs offline on the scene world."""

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SHARED
from falip.cli import cli
from falip.cli.eval import reuse_models
from falip.paper.reproduce import TABLES
from falip.paper.scenes import (
    NO_LARGE,
    NO_PROPOSALS,
    Ours,
    cloud_split,
    derive,
    ranks,
    scene_commands,
    trend,
)
from falip.paper.tables import PAPER
from test_pointclouds import write_normal_resampled

COUNT, LIMIT = 3, 1  # every table, small enough for CI


def table_rows(text: str) -> dict[str, list[str]]:
    """The markdown rows of a printed table: row name -> its cells."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| row |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def every_table(tmp_path_factory):
    """Every table of the paper, run once with --data scenes: ({table: stdout}, runs folder, clouds)."""
    root = tmp_path_factory.mktemp("scene_tables")
    clouds = write_normal_resampled(root / "modelnet40")
    out = root / "runs"
    printed = {}
    with (
        reuse_models()
    ):  # one toy model for every table (each `falip reproduce` shares it within a table anyway)
        for number in TABLES:
            printed[number] = _reproduce(number, out, clouds)
    return printed, out, clouds


def _reproduce(number, out, clouds) -> str:
    args = ["reproduce", number, "--data", "scenes", "--count", str(COUNT), "--modelnet40", str(clouds)]
    if number not in ("7", "8", "9"):
        args += ["--out", str(out), "--limit", str(LIMIT), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, f"Table {number}: {result.output}\n{result.exception!r}"
    return result.stdout


def test_every_table_prints_every_paper_row_in_order(every_table):
    printed, out, _ = every_table
    for number, text in printed.items():
        rows = table_rows(text)
        names = [r.split(" (")[0] for r in rows] if number == "9" else list(rows)
        expected = list(PAPER[number]["rows"]) * (2 if number == "9" else 1)  # Table 9: a block per data set
        assert names == expected, number
        if number not in ("7", "8", "9"):
            assert "a model organism, not OpenAI's CLIP" in text
            assert (out / f"table{number}_scenes.md").read_text() in text


def test_rows_without_a_scene_run_say_why(every_table):
    printed = every_table[0]
    one = table_rows(printed["1"])
    for row, cells in one.items():
        if "prop" in row:
            assert cells[1] == "-" and cells[-1] == "-", row
        else:
            assert cells[1] != "-", row  # every gold row has a number of ours
    assert NO_PROPOSALS in printed["1"]
    thirteen = table_rows(printed["13"])
    assert all(thirteen[r][1] == "-" for r in thirteen if r.endswith("ViT-L"))
    assert all(thirteen[r][1] != "-" for r in thirteen if r.endswith("ViT-B"))
    assert NO_LARGE in printed["13"]
    three = table_rows(printed["3"])
    assert all(
        cells[1] != "-" and cells[3] == "-" for cells in three.values()
    )  # ModelNet40 given, not ScanObjectNN
    assert "no scanobjectnn folder given" in printed["3"]
    for number in ("4", "5", "6", "10", "11", "12", "2", "14"):
        assert all(cells[1] != "-" for cells in table_rows(printed[number]).values()), number


def test_a_cell_is_the_runs_accuracy_with_its_wilson_interval(every_table):
    printed, out, _ = every_table
    summary = json.loads((out / "table5" / "scenes" / "summary.json").read_text())
    entry = next(v for k, v in summary.items() if k.endswith(":replace-v"))["correct"]
    assert entry["n"] == LIMIT
    # the Wilson interval, written out here from its formula
    p, n, z = entry["accuracy"], entry["n"], 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    cells = table_rows(printed["5"])["Replace v"]
    assert cells[0] == "39.0"  # the paper's Avg
    assert cells[1] == f"{100 * p:.1f} [{100 * max(0, centre - half):.1f}, {100 * min(1, centre + half):.1f}]"
    eleven = table_rows(printed["11"])
    folder = json.loads((out / "table11" / "scenes" / "600" / "summary.json").read_text())
    assert eleven["sigma 600"][1].startswith(f"{100 * folder['toy:falip']['correct']['accuracy']:.1f} [")
    cls = json.loads((out / "table14" / "scenes" / "summary.json").read_text())["toy:red_circle_e200"]
    assert table_rows(printed["14"])["enlarge 200"][3].startswith(f"{100 * cls['top5']['accuracy']:.1f} [")


def test_tables_13_and_2_share_the_vit_b_run_and_7_8_9_count_the_data(every_table):
    printed, _, _ = every_table
    two, thirteen = table_rows(printed["2"]), table_rows(printed["13"])
    for row in PAPER["2"]["rows"]:
        assert two[row][1] == thirteen[f"{row} ViT-B"][1]
    from falip.datasets.scene_world import make_scene

    scenes = [make_scene("test", 1_000_000 + i, objects=(2, 4)) for i in range(COUNT)]
    seven, eight = table_rows(printed["7"]), table_rows(printed["8"])
    assert seven["Images"][1] == str(COUNT)
    assert seven["Refs"][1] == str(sum(len(s.expressions()) for s in scenes))
    assert eight["Images used"][1] == str(sum(len(s.objects) for s in scenes))
    assert eight["Categories"][1] == "30"  # 6 colours x 5 shapes


def test_the_runs_of_a_table_share_one_model_and_no_method_leaves_a_trace_on_it():
    """`falip reproduce` loads each model once per table: a method run earlier (PASTA's steering, unleash's
    edit, the two streams) must not change what a later run computes with the same model."""
    from falip.cli.eval import _models
    from falip.datasets.scene_world import make_scene
    from falip.tasks.methods import region_features

    with reuse_models():
        first = _models(["toy"], "cpu", "squash")["toy"]
        assert _models(["toy"], "cpu", "squash")["toy"] is first
    assert _models(["toy"], "cpu", "squash")["toy"] is not first  # outside the block: loaded again
    scene = make_scene("test", 1_000_000, objects=(2, 4))
    boxes = [list(o.box) for o in scene.objects]
    before = region_features(first, scene.image, boxes, "falip")
    for method in ("pasta", "red_circle+unleash", "replace-v", "feature-mask", "falip"):
        region_features(first, scene.image, boxes, method, alpha=4.0, layers=[0, 1])
    after = region_features(first, scene.image, boxes, "falip")
    assert (after - before).abs().max() <= 1e-6 * before.abs().max()


def test_a_rerun_resumes_and_prints_the_same_table(every_table, tmp_path):
    printed, out, _ = every_table
    results = out / "table4" / "scenes" / "results.jsonl"
    before = results.read_text()
    again = CliRunner().invoke(
        cli,
        [
            "reproduce",
            "4",
            "--data",
            "scenes",
            "--count",
            str(COUNT),
            "--out",
            str(out),
            "--limit",
            str(LIMIT),
        ],
    )
    assert again.exit_code == 0, again.output
    assert again.stdout == printed["4"] and results.read_text() == before
    other = CliRunner().invoke(cli, ["reproduce", "4", "--data", "scenes", "--count", "4", "--out", str(out)])
    assert other.exit_code != 0  # another --count is another data set: the run store refuses to mix them


def test_derived_commands_keep_the_method_options_and_swap_the_data():
    rec = derive(
        "falip eval rec reclip --annotations $RECLIP/$SPLIT.jsonl --images $COCO --model $MODEL "
        "--method falip --alpha 0.05 --form all --ties first --subtract --out $OUT/table10/$SPLIT/0.05",
        count=7,
    )
    assert rec.run == "table10/scenes/0.05"
    assert (
        list(rec.args)
        == (
            "eval rec scenes --count 7 --model toy --method falip --alpha 0.05 --form all --ties first "
            "--subtract --out $OUT/table10/scenes/0.05"
        ).split()
    )
    cls = derive(
        "falip eval cls imagenet-s --root $IMAGENET_S --region box --names n.txt --model $MODEL "
        "--method plain --templates dog --layers 8,9 --out $OUT/table2/imagenet_s",
        count=3,
        model="my-ckpt",
    )
    assert cls.run == "table2/scenes"
    assert " ".join(cls.args) == (
        "eval cls scenes --count 3 --templates photo --model my-ckpt --method plain --layers 8,9 "
        "--out $OUT/table2/scenes"
    )
    prop = derive(
        "falip eval rec reclip --model $MODEL --method falip --detections $DETS --out $OUT/t/$SPLIT/p", 3
    )
    large = derive("falip eval cls cub --root $CUB --model $LARGE --method falip --out $OUT/table13/cub", 3)
    assert (prop.args, prop.reason, large.args, large.reason) == (None, NO_PROPOSALS, None, NO_LARGE)
    from falip.errors import FalipError

    with pytest.raises(FalipError, match=r"no value for \$NEW"):
        derive("falip eval rec reclip --model $MODEL --method falip --thing $NEW --out $OUT/t/$SPLIT", 3)
    two = scene_commands("2", 5)
    assert [c.run for c in two] == ["table2/scenes"]  # four data sets, one scene run


def test_ranks_and_the_order_agreement_on_a_hand_made_table():
    assert ranks([3.0, 1.0, 3.0, None, 2.0]) == [1, 4, 1, None, 3]

    def ours(value, half=1.0):
        return Ours(value, value - half, value + half, 100)

    rows = [
        ("a", 40.0, ours(70.0)),  # paper order a > b > c; ours a > c > b
        ("b", 30.0, ours(50.0)),
        ("c", 20.0, ours(60.0, half=20.0)),  # overlaps both
        ("d", 10.0, Ours(reason="why")),  # no number of ours: not counted
    ]
    found = trend(rows)
    assert (found.rows, found.pairs, found.same, found.tied) == (3, 3, 2, 0)  # (a,b) (a,c) agree, (b,c) not
    assert (found.separated, found.separated_same) == (1, 1)  # only (a, b) is separated
    assert found.tau == pytest.approx(
        (2 - 1) / 3, rel=1e-9
    )  # concordant minus discordant over pairs, no ties
    assert found.best_paper == ["a"] and found.best_ours == ["a"]


def test_scene_options_are_refused_without_scenes_and_checked(tmp_path):
    runner = CliRunner()
    data = tmp_path / "data.toml"
    data.write_text('model = "x"\n')
    mixed = runner.invoke(
        cli, ["reproduce", "6", "--data", str(data), "--count", "5", "--out", str(tmp_path)]
    )
    assert "go with --data scenes" in str(mixed.exception)
    zero = runner.invoke(cli, ["reproduce", "6", "--data", "scenes", "--count", "0", "--out", str(tmp_path)])
    assert "--count must be at least 1" in str(zero.exception)
    no_out = runner.invoke(cli, ["reproduce", "6", "--data", "scenes"])
    assert "--out is needed" in str(no_out.exception)
    listed = runner.invoke(cli, ["reproduce", "12", "--data", "scenes", "--count", "9", "--print-commands"])
    lines = listed.output.splitlines()
    assert len(lines) == 6 and all(line.startswith("falip eval rec scenes --count 9 ") for line in lines)
    assert "--layers 0,1,2,3 --out $OUT/table12/scenes/1-4" in listed.output


def test_table_3_reads_the_shared_modelnet40_sample():
    sample = SHARED / "data" / "modelnet40-sample"
    if not sample.is_dir():
        pytest.skip(f"the ModelNet40 sample is not at {sample} (../shared is absent)")
    assert cloud_split(sample, "modelnet40") == "sample"
    listed = CliRunner().invoke(
        cli, ["reproduce", "3", "--data", "scenes", "--modelnet40", str(sample), "--print-commands"]
    )
    assert f"--root {sample} --split sample --model toy --method plain,falip" in listed.output


def test_cloud_split_is_test_when_the_folder_has_one(tmp_path):
    assert cloud_split(write_normal_resampled(tmp_path / "m"), "modelnet40") == "test"
    assert cloud_split(Path(tmp_path), "scanobjectnn") == "test"
