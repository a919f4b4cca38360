"""`falip reproduce TABLE`: run the commands of one of the paper's tables (the same commands as
docs/REPRODUCE.md shows; a test holds the two equal), then print the table in the paper's layout
with the paper's number beside each of ours and the difference.

A table is its command templates (placeholders `$MODEL`, `$SPLIT`, ...) and, for each of the
paper's rows and columns, the cell of our results that answers it: the run's folder, the system
(method, or "ensemble") and the metric. Every command is a `falip eval` run, so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..datasets.classification import IMAGENET_NAMES
from ..errors import FalipError
from .tables import CLS_COLUMNS, PAPER, REC_SPLITS

PLACEHOLDERS = {
    "$MODEL": "model",
    "$LARGE": "large",
    "$COCO": "coco",
    "$RECLIP": "reclip",
    "$DETS": "detections",
    "$CUB": "cub",
    "$DOGS": "dogs",
    "$WATERBIRDS": "waterbirds",
    "$IMAGENET_S": "imagenet_s",
    "$IMAGENET_NAMES": "imagenet_names",
    "$MODELNET40": "modelnet40",
    "$SCANOBJECTNN": "scanobjectnn",
}
REC = "falip eval rec reclip --annotations $RECLIP/$SPLIT.jsonl --images $COCO --model $MODEL --method "
CLS_DATA = {  # data set -> (the command's data part, its template set)
    "dogs": ("dogs --root $DOGS --split all", "dog"),
    "cub": ("cub --root $CUB --split all", "bird"),
    "imagenet_s": ("imagenet-s --root $IMAGENET_S --names $IMAGENET_NAMES --region box", "photo"),
    "waterbirds": ("waterbirds --root $WATERBIRDS --cub-root $CUB", "bird"),
}
CLS_CELLS = (
    ("dogs", "top1"),
    ("dogs", "top5"),
    ("cub", "top1"),
    ("cub", "top5"),
    ("imagenet_s", "top1"),
    ("imagenet_s", "top5"),
    ("waterbirds", "top1"),
)
assert len(CLS_CELLS) == len(CLS_COLUMNS)


@dataclass(frozen=True)
class Cell:
    """One of our table cells: the run folder below --out, the system (method or "ensemble") in its
    `summary.json`, and the metric read there."""

    run: str  # the run's folder below --out, `$SPLIT` still in it
    system: str  # the method, or "ensemble"
    metric: str = "correct"


@dataclass
class TableSpec:
    """One of the paper's tables: its number and title, the commands that fill it (`$SPLIT` still in
    them), its rows' cells (None where we have no run), the tables whose commands it also needs, a
    note, and `extra` rows of ours the paper does not have."""

    number: str
    title: str
    commands: list[str] = field(default_factory=list)
    cells: dict[str, list[Cell | None]] = field(default_factory=dict)
    also: tuple[str, ...] = ()  # tables whose commands this one also needs
    note: str = ""
    extra: dict[str, list[Cell | None]] = field(default_factory=dict)  # our rows the paper does not have


def _rec_cells(run: str, system: str, avg: bool = False) -> list[Cell | None]:
    return [Cell(run.replace("$SPLIT", split), system) for split in REC_SPLITS] + ([None] if avg else [])


def _cls_commands(model: str, methods: str, out: str) -> list[str]:
    return [
        f"falip eval cls {data} --model {model} --method {methods} --templates {templates} --out "
        f"$OUT/{out}/{name}"
        for name, (data, templates) in CLS_DATA.items()
    ]


def _cls_cells(out: str, system: str) -> list[Cell]:
    return [Cell(f"{out}/{name}", system, metric) for name, metric in CLS_CELLS]


def _table1() -> TableSpec:
    runs = {  # folder: (methods and options, uses proposals)
        "prop": ("cpt,red_circle,pasta,red_circle+falip,falip", True),
        "gold": ("red_circle,pasta,red_circle+falip,falip", False),
        "prop_p": ("red_circle,falip --subtract", True),
        "gold_p": ("red_circle,falip --subtract", False),
        "prop_ep_reclip": ("reclip", True),  # ReCLIP's own method: crop + blur under its relation resolver
        "prop_ep_redcircle": ("red_circle,red_circle+blur --ensemble sum --subtract", True),
        "prop_ep_falip": ("falip,blur+falip --ensemble sum --subtract", True),
        "gold_ep_redcircle": ("red_circle,red_circle+blur --ensemble sum --subtract", False),
        "gold_ep_falip": ("falip,blur+falip --ensemble sum --subtract", False),
    }
    commands = [
        REC + methods + (" --detections $DETS" if prop else "") + f" --out $OUT/table1/$SPLIT/{folder}"
        for folder, (methods, prop) in runs.items()
    ]
    named = {
        "CPT prop (CPT's paper)": ("prop", "cpt"),
        "RedCircle prop": ("prop", "red_circle"),
        "PASTA prop": ("prop", "pasta"),
        "RedCircle+FA prop": ("prop", "red_circle+falip"),
        "FALIP prop": ("prop", "falip"),
        "RedCircle gold": ("gold", "red_circle"),
        "PASTA gold": ("gold", "pasta"),
        "RedCircle+FA gold": ("gold", "red_circle+falip"),
        "FALIP gold": ("gold", "falip"),
        "With P: RedCircle prop": ("prop_p", "red_circle"),
        "With P: FALIP prop": ("prop_p", "falip"),
        "With P: RedCircle gold": ("gold_p", "red_circle"),
        "With P: FALIP gold": ("gold_p", "falip"),
        "With E and P: ReCLIP prop": ("prop_ep_reclip", "reclip"),
        "With E and P: RedCircle prop (RedCircle's paper)": ("prop_ep_redcircle", "ensemble"),
        "With E and P: FALIP prop": ("prop_ep_falip", "ensemble"),
        "With E and P: RedCircle gold": ("gold_ep_redcircle", "ensemble"),
        "With E and P: FALIP gold": ("gold_ep_falip", "ensemble"),
    }
    cells = {row: _rec_cells(f"table1/$SPLIT/{folder}", system) for row, (folder, system) in named.items()}
    return TableSpec("1", "Referring expression comprehension", commands, cells)


def _one_run_rec_table(number: str, title: str, methods: str, rows: dict[str, str]) -> TableSpec:
    out = f"table{number}/$SPLIT"
    cells = {row: _rec_cells(out, system, avg=True) for row, system in rows.items()}
    return TableSpec(number, title, [REC + f"{methods} --out $OUT/{out}"], cells)


def _value_table(
    number: str, title: str, option: str, values: Sequence[str], rows: Sequence[str], methods: str = "falip"
) -> TableSpec:
    """One FALIP run per value of an option (Tables 10-12), the paper's rows in order."""
    commands, cells = [], {}
    for value, row in zip(values, rows):
        label = row.split(" ", 1)[1]  # "alpha 0.05" -> 0.05, "layers 1-4" -> 1-4
        commands.append(REC + f"{methods} {option} {value} --out $OUT/table{number}/$SPLIT/{label}")
        cells[row] = _rec_cells(f"table{number}/$SPLIT/{label}", methods, avg=True)
    return TableSpec(number, title, commands, cells)


def _table6() -> TableSpec:
    runs = (
        ("no_mask", "plain", "plain"),
        ("a", "falip --form cls", "falip"),
        ("b", "falip --form all", "falip"),
        ("c", "falip --form diag", "falip"),
    )
    commands = [
        REC + f"{methods} --ties first --out $OUT/table6/$SPLIT/{folder}" for folder, methods, _ in runs
    ]
    rows = ("No mask", "Method a", "Method b", "Method c")
    cells = {
        row: _rec_cells(f"table6/$SPLIT/{folder}", system, avg=True)
        for row, (folder, _, system) in zip(rows, runs)
    }
    return TableSpec("6", "Forms of the mask", commands, cells)


AUTHORS_VIT_L_LAYERS = ",".join(str(i) for i in range(8, 24))  # their Transformer.forward leaves 0-7 unmasked
PAPER_VIT_L_LAYERS = "20,21,22,23"  # the paper's text: "the last 4 layers"


def _table13() -> TableSpec:
    methods = "plain,red_circle,blur_ellipse,falip"
    commands = [
        c.replace(" --out ", f" --layers {AUTHORS_VIT_L_LAYERS} --out ")
        for c in _cls_commands("$LARGE", methods, "table13")
    ]
    commands += [
        c.replace(" --out ", f" --layers {PAPER_VIT_L_LAYERS} --out ")
        for c in _cls_commands("$LARGE", "falip", "table13/last4")
    ]
    cells = {}
    for size, out in (("B", "table2"), ("L", "table13")):
        for label, system in (
            ("Original CLIP", "plain"),
            ("RedCircle", "red_circle"),
            ("Blur", "blur_ellipse"),
            ("FALIP", "falip"),
        ):
            cells[f"{label} ViT-{size}"] = _cls_cells(out, system)
    extra = {"FALIP ViT-L, the last 4 layers masked (the paper's text)": _cls_cells("table13/last4", "falip")}
    return TableSpec("13", "Classification with ViT-B and ViT-L", commands, cells, also=("2",), extra=extra)


def _table14() -> TableSpec:
    enlargements = (0, 5, 10, 20, 30, 40, 50, 100, 150, 200)
    systems = ["red_circle" if e == 0 else f"red_circle_e{e}" for e in enlargements]
    commands = _cls_commands("$MODEL", ",".join(systems), "table14")
    cells = {f"enlarge {e}": _cls_cells("table14", s) for e, s in zip(enlargements, systems)}
    return TableSpec("14", "RedCircle enlarged by pixels", commands, cells)


def _tables() -> dict[str, TableSpec]:
    cls_methods = "plain,red_circle,blur_ellipse,falip"
    tables = [
        _table1(),
        TableSpec(
            "2",
            "Region-prompted classification",
            _cls_commands("$MODEL", cls_methods, "table2"),
            {
                row: _cls_cells("table2", s)
                for row, s in (
                    ("Original CLIP", "plain"),
                    ("RedCircle", "red_circle"),
                    ("Blur", "blur_ellipse"),
                    ("FALIP", "falip"),
                )
            },
        ),
        TableSpec(
            "3",
            "3D point cloud recognition",
            [
                f"falip eval pointcloud {name} --root ${name.upper()} --model $MODEL --method plain,falip "
                f"--out $OUT/table3/{name}"
                for name in ("modelnet40", "scanobjectnn")
            ],
            {
                row: [Cell(f"table3/{name}", system, "top1") for name in ("modelnet40", "scanobjectnn")]
                + [None]
                for row, system in (("Original CLIP", "plain"), ("FALIP", "falip"))
            },
        ),
        _one_run_rec_table(
            "4",
            "Unleashing visual prompts",
            "red_circle,red_circle+unleash,red_circle+blur,red_circle+blur+unleash",
            {
                "R": "red_circle",
                "R+U": "red_circle+unleash",
                "R+B": "red_circle+blur",
                "R+B+U": "red_circle+blur+unleash",
            },
        ),
        _one_run_rec_table(
            "5",
            "The attention operation",
            "red_circle,replace-v,replace-qk,feature-mask,falip",
            {
                "RedCircle": "red_circle",
                "Replace v": "replace-v",
                "Replace q,k": "replace-qk",
                "Feature mask": "feature-mask",
                "FALIP": "falip",
            },
        ),
        _table6(),
        TableSpec("7", "Referring expression data sets"),
        TableSpec("8", "Image classification data sets"),
        TableSpec("9", "3D point cloud data sets"),
        _value_table(
            "10",
            "alpha",
            "--alpha",
            ("0.05", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6"),
            list(PAPER["10"]["rows"]),
        ),
        _value_table(
            "11",
            "sigma",
            "--sigma",
            ("1", "100", "200", "300", "400", "500", "600"),
            list(PAPER["11"]["rows"]),
        ),
        _value_table(
            "12",
            "Which layers are masked",
            "--layers",
            ("0", "0,1,2,3", "0,1,2,3,4,5", "11", "8,9,10,11", "6,7,8,9,10,11"),
            list(PAPER["12"]["rows"]),
        ),
        _table13(),
        _table14(),
    ]
    return {t.number: t for t in tables}


TABLES = _tables()


def get_table(number: str) -> TableSpec:
    """The `TableSpec` of table `number` ("3", "table3" and "Table 3" alike). Raises FalipError for a
    table the paper does not have."""
    number = str(number).removeprefix("table").removeprefix("Table").strip()
    if number not in TABLES:
        raise FalipError(f"no table {number!r}; the paper's tables are {', '.join(TABLES)}")
    return TABLES[number]


def table_commands(number: str) -> list[str]:
    """Every command a table runs, its `also` tables' first, with `$SPLIT` still in them."""
    spec = get_table(number)
    return [c for other in spec.also for c in get_table(other).commands] + spec.commands


def load_data_config(path: Path) -> dict[str, str]:
    """The TOML file naming the data folders (keys: model, large, coco, reclip, detections, cub, dogs,
    waterbirds, imagenet_s, imagenet_names (default: the shipped names), modelnet40, scanobjectnn)."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FalipError(f"data config {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise FalipError(f"{path} is not valid TOML: {exc}") from None
    known = set(PLACEHOLDERS.values())
    unknown = sorted(set(data) - known)
    if unknown:
        raise FalipError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return {k: str(v) for k, v in data.items()}


def _detections(folder: str, split: str | None) -> str:
    """ReCLIP's proposals for a split's data set: `<folder>/<dataset>_dets_dict.json`, one file per data
    set (refcoco, refcoco+, refcocog) as ReCLIP's release ships them, shared by its splits."""
    dataset = (split or "").split("_", 1)[0]
    return str(Path(folder) / f"{dataset}_dets_dict.json")


def missing_data(command: str, data: dict[str, str], model: str | None = None) -> list[str]:
    """The data-config keys a command template needs that `data` (and `model`) do not give, as
    "`key` (for $PLACEHOLDER)"."""
    given = set(data) | {"imagenet_names"} | ({"model"} if model else set())  # the names ship with falip
    return [
        f"`{key}` (for {placeholder})"
        for placeholder, key in PLACEHOLDERS.items()
        if placeholder in command and key not in given
    ]


def fill_in(
    command: str, data: dict[str, str] | None = None, out: Path | None = None, model: str | None = None
) -> str:
    """A command template with what is known filled in (the data config's folders, `model`, `out`) and the
    rest left as placeholders (`$SPLIT` stays: the command runs once per split), for `--print-commands`."""
    values = {**(data or {}), **({"model": model} if model else {})}
    for placeholder in sorted(PLACEHOLDERS, key=len, reverse=True):
        key = PLACEHOLDERS[placeholder]
        if key in values and placeholder in command:
            if (
                placeholder == "$DETS"
            ):  # the split's data set's file, in the shell's words: refcoco+_... for refcoco+_val
                value = shlex.quote(str(Path(values[key]))) + '/"${SPLIT%%_*}_dets_dict.json"'
            else:
                value = shlex.quote(values[key])
            command = command.replace(placeholder, value)
    return command.replace("$OUT", shlex.quote(str(out))) if out is not None else command


def expand(command: str, data: dict[str, str], out: Path, model: str | None = None) -> list[list[str]]:
    """A command template as argument lists: one per `$SPLIT` (or one), placeholders filled."""
    values = {"imagenet_names": str(IMAGENET_NAMES), **data}
    if model:
        values["model"] = model
    splits = REC_SPLITS if "$SPLIT" in command else (None,)
    runs = []
    for split in splits:
        text = command
        for placeholder in sorted(PLACEHOLDERS, key=len, reverse=True):
            if placeholder not in text:
                continue
            key = PLACEHOLDERS[placeholder]
            if key not in values:
                raise FalipError(f"this table needs `{key}` in the data config (for {placeholder})")
            value = _detections(values[key], split) if placeholder == "$DETS" else values[key]
            text = text.replace(placeholder, value)
        text = text.replace("$OUT", str(out))
        if split:
            text = text.replace("$SPLIT", split)
        runs.append(shlex.split(text)[1:])
    return runs


def run_table(
    number: str,
    data: dict[str, str],
    out: Path,
    run: Callable[[list[str]], None],
    *,
    model: str | None = None,
    limit: int | None = None,
    quiet: bool = False,
    dtype: str | None = None,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Run (or resume) every command of a table whose data the config names; the others are left out,
    each with the reason, so their cells print as "-".

    Args:
        number: the table ("1" ... "14").
        data: the data config (names of data folders, see `load_data_config`).
        out: the folder for the table's runs.
        run: runs one `falip` command given its arguments without the program name (the CLI passes its own
            entry point, so this layer never imports the command line).
        model, limit, quiet: fill `$MODEL`, cap each run, silence progress bars.
        dtype: every run's `--dtype` (e.g. "float16", the authors' GPU mode); None: each command's default.
    Returns:
        One line per command left out: the command and the data-config keys it needs.
    """
    left_out = []
    for template in table_commands(number):
        needs = missing_data(template, data, model)
        if needs:
            left_out.append(
                f"{fill_in(template, data, out, model)}: needs {', '.join(needs)} in the data config"
            )
            log(f"not run: {left_out[-1]}")
            continue
        for args in expand(template, data, out, model):
            log("falip " + shlex.join(args))
            extra = (["--limit", str(limit)] if limit else []) + (["--quiet"] if quiet else [])
            extra += ["--dtype", dtype] if dtype else []
            with contextlib.redirect_stdout(
                sys.stderr
            ):  # each run's own summary goes with the log, the table to stdout
                run(args + extra)
    return left_out


def _summary(out: Path, run: str) -> dict | None:
    path = out / run / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def our_value(out: Path, cell: Cell | None) -> float | None:
    """Our accuracy (%) for a cell, or None when its run has not been made."""
    if cell is None:
        return None
    summary = _summary(out, cell.run)
    if summary is None:
        return None
    for system, entry in summary.items():
        if (
            system.rsplit(":", 1)[-1] == cell.system
            and cell.metric in entry
            and entry[cell.metric]["accuracy"] is not None
        ):
            return 100 * entry[cell.metric]["accuracy"]
    return None


def _fmt(value: float | None, places: int = 1) -> str:
    return "-" if value is None else f"{value:,.{places}f}"


def format_table(number: str, ours: dict[str, list[float | None]]) -> str:
    """Markdown: each cell `ours (paper, difference)`."""
    paper = PAPER[number]
    columns = list(paper["columns"])
    places = 0 if number in ("7", "8", "9") else 1
    lines = [
        f"Table {number}: {get_table(number).title}. Each cell: ours (the paper's, ours minus the paper's).",
        "",
        "| row | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    rows = {**paper["rows"], **{row: [None] * len(columns) for row in get_table(number).extra}}
    for row, reference in rows.items():
        values = list(ours.get(row, [None] * len(columns)))
        if columns[-1] == "Avg" and all(v is not None for v in values[:-1]):
            values[-1] = sum(values[:-1]) / len(values[:-1])
        cells = []
        for mine, theirs in zip(values, reference):
            diff = "" if mine is None or theirs is None else f", {mine - theirs:+,.{places}f}"
            cells.append(f"{_fmt(mine, places)} ({_fmt(theirs, places)}{diff})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def collect(number: str, data: dict[str, str], out: Path) -> dict[str, list[float | None]]:
    """Our numbers for each of the paper's rows: from the runs' summaries, or counted from the data
    (Tables 7, 8)."""
    if number == "7":
        return _rec_statistics(data)
    if number == "8":
        return _cls_statistics(data)
    if number == "9":
        return _cloud_statistics(data)
    spec = get_table(number)
    return {
        row: [our_value(out, cell) for cell in cells] for row, cells in {**spec.cells, **spec.extra}.items()
    }


def _rec_statistics(data: dict[str, str]) -> dict[str, list[float | None]]:
    from ..datasets import open_rec

    images, refs = [], []
    for split in REC_SPLITS:
        path = Path(data.get("reclip", "")) / f"{split}.jsonl"
        if "reclip" not in data or not path.is_file():
            images.append(None)
            refs.append(None)
            continue
        loaded = open_rec("reclip", annotations=str(path), images=data.get("coco", "."))
        images.append(float(len(loaded)))
        refs.append(float(sum(len(item.expressions) for item in loaded)))
    return {"Images": images, "Refs": refs}


def _cls_statistics(data: dict[str, str]) -> dict[str, list[float | None]]:
    from ..datasets import open_cls

    def count(name: str, **options):
        try:
            return open_cls(name, **options)
        except FalipError:
            return None

    categories, total, used = [], [], []
    for key, name, used_split in (
        ("dogs", "dogs", "all"),
        ("cub", "cub", "all"),
        ("imagenet_s", "imagenet-s", "validation"),
        ("waterbirds", "waterbirds", "test"),
    ):
        if key not in data:
            categories.append(None), total.append(None), used.append(None)
            continue
        options = {"root": data[key], "split": used_split}
        if key == "waterbirds":
            options["cub_root"] = data.get("cub")
        chosen = count(name, **options)
        categories.append(None if chosen is None else float(len(chosen.classes)))
        used.append(None if chosen is None else float(len(chosen.examples)))
        if key in ("dogs", "cub"):
            total.append(used[-1])
        elif key == "waterbirds":
            parts = [count(name, **{**options, "split": s}) for s in ("train", "val", "test")]
            total.append(None if None in parts else float(sum(len(p.examples) for p in parts)))
        else:
            total.append(None)  # ImageNet-S's total counts its training images, which evaluation never reads
    return {"Categories": categories, "Total Images": total, "Images used": used}


def _cloud_statistics(data: dict[str, str]) -> dict[str, list[float | None]]:
    from ..datasets import open_clouds

    def count(name: str, split: str):
        try:
            return open_clouds(name, root=data[name], split=split)
        except FalipError:
            return None

    categories, total, used = [], [], []
    for name in ("modelnet40", "scanobjectnn"):
        test = count(name, "test") if name in data else None
        train = count(name, "train") if name in data else None
        categories.append(None if test is None else float(len(test.classes)))
        used.append(None if test is None else float(len(test.examples)))
        total.append(
            None if test is None or train is None else float(len(test.examples) + len(train.examples))
        )
    return {"Categories": categories, "Total Clouds": total, "Clouds used": used}


def table_list() -> str:
    """One line per table: its number, title, how many runs it takes (or that it is counted from your
    data) and its note."""
    lines = []
    for number, spec in TABLES.items():
        runs = sum(len(REC_SPLITS) if "$SPLIT" in c else 1 for c in table_commands(number))
        what = f"{runs} runs" if runs else "counted from your data"
        what += f"; {spec.note}" if spec.note else ""
        lines.append(f"Table {number:>2}: {spec.title} ({what})")
    return "\n".join(lines)
