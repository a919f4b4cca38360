"""`falip reproduce TABLE --data scenes`: every table of the paper on the scene world, offline.

The scene world (`datasets/scene_world.py`) and the embedded toy CLIP need no download, so each of the
paper's tables can be run end to end on them: the referring-expression tables (1, 4, 5, 6, 10, 11, 12)
on the multi-object test scenes' expressions, the classification tables (2, 13, 14) on naming every
object's box among the 30 colour-shape classes, Table 3 on a ModelNet40 folder when one is given
(e.g. `../shared/data/modelnet40-sample`), Tables 7-9 as counts of that data. The toy is a model
organism, not OpenAI's CLIP: what it shows is whether the paper's *trends* (the order of a table's
rows) appear on a model and world we control, not the paper's numbers.

There is no second list of commands here: each scene command is derived from the real table's command
(`paper.reproduce.table_commands`) by swapping the data part for the scene world's, so any method option
the real commands carry reaches the scene tables unchanged. A command that needs what the scene world
has not got is not run, and its rows print "-" with the reason: detector proposals ("prop" rows) and a
second model size (ViT-L, Table 13).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FalipError
from .reproduce import CLS_DATA, Cell, get_table, table_commands
from .tables import PAPER, REC_SPLITS

SCENES = "scenes"
DEFAULT_COUNT = 500  # as `falip eval rec|cls scenes`
TOY = "toy"
CLASS_TEMPLATES = "photo"  # "a photo of a {}.": the scene world's classes are colour-shape names
# options that say which data a real command reads; everything else (methods, alpha, sigma, layers, form,
# subtract, ensemble, unleash, pasta, ties, ...) is kept as the real command has it
REC_CLS_DATA_OPTIONS = {
    "--annotations",
    "--images",
    "--instances",
    "--split",
    "--split-by",
    "--root",
    "--cub-root",
    "--names",
    "--categories",
    "--region",
    "--templates",
    "--count",
}
CLOUD_DATA_OPTIONS = {"--root", "--split"}
NO_PROPOSALS = (
    "the scene world has no detector proposals (the paper's 'prop' rows); its candidates are the "
    "objects' boxes, as in the 'gold' rows"
)
NO_LARGE = "the toy model has one size: there is no ViT-L counterpart"
NO_RUN = "no command of ours answers this row (see docs/REPRODUCE.md)"
NOT_YET = "not run yet"


def _no_clouds(name: str) -> str:
    example = " (e.g. ../shared/data/modelnet40-sample)" if name == "modelnet40" else ""
    return f"no {name} folder given: --{name} DIR{example}"


@dataclass(frozen=True)
class SceneCommand:
    """One derived run: its `falip` arguments (without `--limit`/`--quiet`), or why it is not run."""

    args: tuple[str, ...] | None
    run: str  # the run's folder below --out
    reason: str = ""


def cloud_split(root: Path, name: str) -> str:
    """The split a point-cloud folder is read at: `test`, or `sample` for the shared ModelNet40 sample
    (which has no test list, only `modelnet40_sample.txt`)."""
    root = Path(root)
    if name == "modelnet40" and not any(
        (root / f).is_file() for f in ("modelnet40_test.txt", "test_files.txt")
    ):
        if (root / "modelnet40_sample.txt").is_file():
            return "sample"
    return "test"


def scene_run(run: str) -> str:
    """A real run folder (`table1/refcoco_testa/gold`, `table2/dogs`) as the scene world's
    (`table1/scenes/gold`, `table2/scenes`): a REC split or a classification data set becomes `scenes`."""
    names = set(REC_SPLITS) | set(CLS_DATA) | {"$SPLIT"}
    return "/".join(SCENES if part in names else part for part in run.split("/"))


def _options(words: Sequence[str]) -> list[tuple[str, str | None]]:
    """`--name value` and `--flag` pairs (a value never starts with `--` in the table commands)."""
    out, i = [], 0
    while i < len(words):
        name = words[i]
        if not name.startswith("--"):
            raise FalipError(f"cannot read the table command at {name!r}")
        if i + 1 < len(words) and not words[i + 1].startswith("--"):
            out.append((name, words[i + 1]))
            i += 2
        else:
            out.append((name, None))
            i += 1
    return out


def derive(template: str, count: int, model: str = TOY, clouds: dict[str, str] | None = None) -> SceneCommand:
    """The scene world's version of one real table command (a template with `$MODEL`, `$SPLIT`, `$OUT`...).

    Args:
        template: a command of `paper.reproduce.table_commands` ("falip eval rec reclip ...").
        count: how many test scenes (`--count` of the scene data set).
        model: the checkpoint for `$MODEL` (the embedded toy by default).
        clouds: point-cloud folders by data set name ("modelnet40", "scanobjectnn") for Table 3.
    Returns:
        The derived arguments with `$OUT` still in `--out`, and the run folder below it; or, for a command
        the scene world cannot answer (proposals, ViT-L, no point clouds given), no arguments and the reason.
    Raises:
        FalipError: a command this function cannot read.
    """
    words = shlex.split(template)
    if words[:2] != ["falip", "eval"] or len(words) < 4:
        raise FalipError(f"not a `falip eval` command: {template}")
    task, dataset, options = words[2], words[3], _options(words[4:])
    given = dict(options)
    if "--out" not in given or not str(given["--out"]).startswith("$OUT/"):
        raise FalipError(f"the command has no --out $OUT/...: {template}")
    real_run = given["--out"].removeprefix("$OUT/")
    if task == "pointcloud":
        run = real_run
        root = (clouds or {}).get(dataset)
        if root is None:
            return SceneCommand(None, run, _no_clouds(dataset))
        head = ["eval", task, dataset, "--root", str(root), "--split", cloud_split(Path(root), dataset)]
        dropped = CLOUD_DATA_OPTIONS
    elif task in ("rec", "cls"):
        run = scene_run(real_run)
        head = ["eval", task, SCENES, "--count", str(count)]
        if task == "cls":
            head += ["--templates", CLASS_TEMPLATES]
        dropped = REC_CLS_DATA_OPTIONS
    else:
        raise FalipError(f"unknown task {task!r} in {template}")
    if "--detections" in given:
        return SceneCommand(None, run, NO_PROPOSALS)
    if given.get("--model") == "$LARGE":
        return SceneCommand(None, run, NO_LARGE)
    args = list(head)
    for name, value in options:
        if name in dropped or name == "--out":
            continue
        if name == "--model":
            value = model
        if value is not None and "$" in value:
            raise FalipError(f"the scene world has no value for {value} in {template}")
        args += [name] if value is None else [name, value]
    return SceneCommand(tuple(args + ["--out", f"$OUT/{run}"]), run)


def scene_commands(
    number: str, count: int, model: str = TOY, clouds: dict[str, str] | None = None
) -> list[SceneCommand]:
    """Every derived command of a table (its `also` tables' first), each run folder once: the four
    classification data sets of a real table are one scene run."""
    out: dict[str, SceneCommand] = {}
    for template in table_commands(number):
        command = derive(template, count, model, clouds)
        known = out.get(command.run)
        if known is not None and known != command:
            raise FalipError(f"two commands of Table {number} write {command.run} differently")
        out.setdefault(command.run, command)
    return list(out.values())


def run_scene_table(
    number: str,
    out: Path,
    run: Callable[[list[str]], None],
    *,
    count: int = DEFAULT_COUNT,
    model: str = TOY,
    clouds: dict[str, str] | None = None,
    limit: int | None = None,
    dtype: str | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Run (or resume) every derived command of a table on the scene world.

    Args:
        number: the table ("1" ... "14"); Tables 7-9 run nothing.
        out: the folder for the table's runs (`out/tableN/scenes/...`).
        run: runs one `falip` command given its arguments (the CLI passes its own entry point).
        count, model, clouds: as for `derive`; limit, quiet: cap each run, silence progress bars.
        dtype: every run's `--dtype`; None: each command's default.
    """
    for command in scene_commands(number, count, model, clouds):
        if command.args is None:
            log(f"# not run ({command.run}): {command.reason}")
            continue
        args = [a.replace("$OUT", str(out)) for a in command.args]
        log("falip " + shlex.join(args))
        extra = (["--limit", str(limit)] if limit else []) + (["--quiet"] if quiet else [])
        extra += ["--dtype", dtype] if dtype else []
        # each run's summary goes with the log, the table to stdout
        with contextlib.redirect_stdout(sys.stderr):
            run(args + extra)


# ---- reading the runs and printing the table ---------------------------------------------------------


@dataclass
class Ours:
    """One of our cells: accuracy (%) with its Wilson 95% interval, or why there is none."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    reason: str = ""

    def text(self) -> str:
        """The cell as text: "value [low, high]" to one decimal, or "-" when there is no value."""
        if self.value is None:
            return "-"
        return f"{self.value:.1f} [{self.low:.1f}, {self.high:.1f}]"


def read_cell(out: Path, cell: Cell | None, reasons: dict[str, str]) -> Ours:
    """Our cell from its run's `summary.json` (the row's system and metric), or the reason it is empty."""
    if cell is None:
        return Ours(reason=NO_RUN)
    if cell.run in reasons:
        return Ours(reason=reasons[cell.run])
    path = Path(out) / cell.run / "summary.json"
    if not path.is_file():
        return Ours(reason=NOT_YET)
    for system, entry in json.loads(path.read_text()).items():
        if system.rsplit(":", 1)[-1] != cell.system or cell.metric not in entry:
            continue
        metric = entry[cell.metric]
        if metric["accuracy"] is None:
            break
        low, high = metric["ci95"]
        return Ours(100 * metric["accuracy"], 100 * low, 100 * high, int(metric["n"]))
    return Ours(reason=NOT_YET)


def ranks(values: Sequence[float | None]) -> list[int | None]:
    """1 for the largest value, ties sharing the smaller rank; None stays None (not ranked)."""
    present = [v for v in values if v is not None]
    return [None if v is None else 1 + sum(other > v for other in present) for v in values]


@dataclass
class Trend:
    """How the order of a table's rows on the scene world compares with the paper's."""

    rows: int = 0  # rows with both numbers
    pairs: int = 0  # pairs of them that the paper orders (different values)
    same: int = 0  # of those, ordered the same way by ours
    tied: int = 0  # of those, equal in ours
    separated: int = 0  # of `pairs`, those whose intervals of ours do not overlap
    separated_same: int = 0  # of those, ordered as the paper
    tau: float | None = None  # Kendall's tau-b between the paper's and ours
    best_paper: list[str] = field(default_factory=list)
    best_ours: list[str] = field(default_factory=list)


def trend(rows: Sequence[tuple[str, float | None, Ours]]) -> Trend:
    """Pairwise agreement of row order, over the rows that have a paper number and one of ours.

    Args:
        rows: (row name, the paper's number, ours) in the paper's order.
    """
    both = [(name, paper, ours) for name, paper, ours in rows if paper is not None and ours.value is not None]
    result = Trend(rows=len(both))
    for i in range(len(both)):
        for j in range(i + 1, len(both)):
            (_, p1, o1), (_, p2, o2) = both[i], both[j]
            if p1 == p2:
                continue
            result.pairs += 1
            agree = (p1 - p2) * (o1.value - o2.value) > 0
            result.same += agree
            result.tied += o1.value == o2.value
            if o1.low > o2.high or o2.low > o1.high:
                result.separated += 1
                result.separated_same += agree
    if len(both) >= 2:
        from scipy.stats import kendalltau

        tau = kendalltau([p for _, p, _ in both], [o.value for _, _, o in both]).statistic
        result.tau = None if tau != tau else float(tau)  # NaN when one side is constant
        top_paper = max(p for _, p, _ in both)
        top_ours = max(o.value for _, _, o in both)
        result.best_paper = [name for name, p, _ in both if p == top_paper]
        result.best_ours = [name for name, _, o in both if o.value == top_ours]
    return result


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


@dataclass
class Column:
    """A pair of columns: the paper's reference number per row and our cell per row."""

    paper_header: str
    paper: Callable[[str], float | None]
    ours_header: str
    cell: Callable[[list[Cell | None]], Cell | None]


def _columns(number: str) -> list[Column]:
    paper = PAPER[number]
    columns = list(paper["columns"])
    rows = paper["rows"]
    if number == "3":
        return [
            Column(
                f"paper {name}",
                lambda row, i=i: rows[row][i],
                f"ours {name}",
                lambda cells, i=i: cells[i],
            )
            for i, name in enumerate(columns[:2])
        ]
    if columns[0].endswith("top1"):  # classification: the paper's four data sets' mean beside the scenes
        top1 = [i for i, c in enumerate(columns) if c.endswith("top1")]
        top5 = [i for i, c in enumerate(columns) if c.endswith("top5")]
        return [
            Column(
                f"paper mean top-1 ({len(top1)} sets)*",
                lambda row: _mean([rows[row][i] for i in top1]),
                "scenes top-1",
                lambda cells: cells[0],
            ),
            Column(
                f"paper mean top-5 ({len(top5)} sets)*",
                lambda row: _mean([rows[row][i] for i in top5]),
                "scenes top-5",
                lambda cells: cells[1],
            ),
        ]
    if columns[-1] == "Avg":
        reference = Column("paper Avg", lambda row: rows[row][-1], SCENES, lambda cells: cells[0])
    else:
        reference = Column(
            f"paper mean ({len(columns)} columns)*",
            lambda row: _mean(rows[row]),
            SCENES,
            lambda cells: cells[0],
        )
    return [reference]


def _scene_cell(cell: Cell | None) -> Cell | None:
    return None if cell is None else Cell(scene_run(cell.run), cell.system, cell.metric)


def collect_scenes(
    number: str, out: Path, count: int = DEFAULT_COUNT, model: str = TOY, clouds: dict[str, str] | None = None
) -> dict[str, list[Ours]]:
    """Our cells (one per column pair of `_columns`) for each of the paper's rows, from the runs in `out`."""
    spec = get_table(number)
    reasons = {c.run: c.reason for c in scene_commands(number, count, model, clouds) if c.args is None}
    return {
        row: [read_cell(out, _scene_cell(column.cell(cells)), reasons) for column in _columns(number)]
        for row, cells in spec.cells.items()
    }


def _tau(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def format_scene_table(number: str, ours: dict[str, list[Ours]], count: int) -> str:
    """Markdown: the paper's rows in its order, the paper's reference number beside ours (with its
    Wilson 95% interval), each row's rank in the paper and in ours, then the agreement of the order
    and why any row has no number of ours."""
    spec = get_table(number)
    columns = _columns(number)
    names = list(PAPER[number]["rows"])
    n = max((o.n for row in ours.values() for o in row), default=0)
    world = (
        f"{n} point clouds"
        if number == "3"
        else f"the first {count} multi-object test scenes, n = {n} per run"
    )
    lines = [
        f"Table {number} on the scene world: {spec.title}. Ours: the embedded toy CLIP (a model organism, "
        f"not OpenAI's CLIP) on {world}; % with the Wilson 95% interval. Rank: 1 is the best row.",
        "",
    ]
    header = (
        ["row"] + [h for c in columns for h in (c.paper_header, c.ours_header)] + ["rank paper", "rank ours"]
    )
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    paper_first = {row: columns[0].paper(row) for row in names}
    ours_first = {row: ours.get(row, [Ours(reason=NO_RUN)])[0] for row in names}
    rankable = [row for row in names if ours_first[row].value is not None]
    paper_rank = dict(zip(rankable, ranks([paper_first[r] for r in rankable])))
    ours_rank = dict(zip(rankable, ranks([ours_first[r].value for r in rankable])))
    for row in names:
        cells = []
        for column, mine in zip(columns, ours.get(row, [Ours(reason=NO_RUN)] * len(columns))):
            reference = column.paper(row)
            cells += ["-" if reference is None else f"{reference:.1f}", mine.text()]
        cells += [str(paper_rank.get(row, "-")), str(ours_rank.get(row, "-"))]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if any("*" in c.paper_header for c in columns):
        lines += ["", "\\* computed from the paper's columns (the paper prints no average for this table)."]
    found = trend([(row, paper_first[row], ours_first[row]) for row in names])
    lines.append("")
    if found.rows >= 2:
        lines.append(
            f"Order of the rows: {found.same} of {found.pairs} pairs as the paper's"
            + (f" ({found.tied} tied in ours)" if found.tied else "")
            + f", Kendall tau {_tau(found.tau)}; "
            f"of the {found.separated} pairs whose intervals of ours do not overlap, "
            f"{found.separated_same} as the paper's. "
            f"Best row: the paper's {', '.join(found.best_paper)}; ours {', '.join(found.best_ours)}."
        )
    else:
        lines.append("Order of the rows: fewer than two rows have a number of ours.")
    why: dict[str, list[str]] = {}
    for row in names:
        for mine in ours.get(row, [Ours(reason=NO_RUN)]):
            if mine.value is None:
                why.setdefault(mine.reason, [])
                if row not in why[mine.reason]:
                    why[mine.reason].append(row)
    for reason, rows in why.items():
        lines.append(f"- {', '.join(rows)}: {reason}.")
    return "\n".join(lines) + "\n"


# ---- Tables 7, 8 and 9: the data, counted -----------------------------------------------------------


def count_scenes(number: str, count: int, clouds: dict[str, str] | None = None) -> str:
    """Tables 7-9 for the scene world: its scenes, expressions, classes and objects (and the point
    clouds of a given ModelNet40/ScanObjectNN folder), beside the range of the paper's counts."""
    from ..datasets import open_clouds, open_rec
    from ..datasets.scenes import scene_cls

    paper = PAPER[number]
    ours: dict[str, tuple[str, str]] = {}  # row -> (ours, what it counts)
    if number == "7":
        images = open_rec(SCENES, count=count)
        ours["Images"] = (f"{len(images):,}", "test scenes")
        ours["Refs"] = (f"{sum(len(i.expressions) for i in images):,}", "referring expressions")
    elif number == "8":
        data = scene_cls(count=count)
        ours["Categories"] = (f"{len(data.classes)}", "colour-shape names")
        ours["Total Images"] = (f"{count:,}", "test scenes")
        ours["Images used"] = (f"{len(data.examples):,}", "objects, each named from its box")
    else:
        for name in ("modelnet40", "scanobjectnn"):
            root = (clouds or {}).get(name)
            if root is None:
                continue
            test = open_clouds(name, root=root, split=cloud_split(Path(root), name))
            ours[f"{name} Categories"] = (f"{len(test.classes)}", name)
            ours[f"{name} Clouds used"] = (f"{len(test.examples):,}", name)
    lines = [
        f"Table {number} on the scene world: {get_table(number).title}. The paper's counts (range over its "
        f"columns: {', '.join(paper['columns'])}) beside ours.",
        "",
        "| row | paper | ours | what ours counts |",
        "|---|---:|---:|---|",
    ]
    if number == "9":
        for name, index in (("modelnet40", 0), ("scanobjectnn", 1)):
            for row in ("Categories", "Total Clouds", "Clouds used"):
                if row == "Total Clouds":
                    mine, what = "-", "only the evaluated split is read"
                else:
                    mine, what = ours.get(f"{name} {row}", ("-", _no_clouds(name)))
                lines.append(
                    f"| {row} ({paper['columns'][index]}) | {paper['rows'][row][index]:,} | {mine} | {what} |"
                )
    else:
        for row, values in paper["rows"].items():
            low, high = min(values), max(values)
            span = f"{low:,}" if low == high else f"{low:,}-{high:,}"
            mine, what = ours.get(row, ("-", ""))
            lines.append(f"| {row} | {span} | {mine} | {what} |")
    return "\n".join(lines) + "\n"


def scene_table(
    number: str,
    out: Path | None,
    count: int = DEFAULT_COUNT,
    model: str = TOY,
    clouds: dict[str, str] | None = None,
) -> str:
    """The printed table: counts for Tables 7-9, else the runs in `out` beside the paper's numbers."""
    number = get_table(number).number
    if number in ("7", "8", "9"):
        return count_scenes(number, count, clouds)
    if out is None:
        raise FalipError("--out is needed: the folder for the table's runs")
    return format_scene_table(number, collect_scenes(number, Path(out), count, model, clouds), count)


def print_scene_commands(
    number: str, count: int, model: str = TOY, clouds: dict[str, str] | None = None
) -> str:
    """The derived commands, one a line (`$OUT` kept), and `# not run` lines with the reason."""
    lines = []
    for command in scene_commands(number, count, model, clouds):
        if command.args is None:
            lines.append(f"# not run ({command.run}): {command.reason}")
        else:
            lines.append("falip " + _join(command.args))
    return "\n".join(lines)


def _join(args: Sequence[str]) -> str:
    """Like `shlex.join`, leaving `$OUT/...` unquoted so that a shell fills it in."""
    return " ".join(a if re.fullmatch(r"\$OUT/[\w./+-]*", a) else shlex.quote(a) for a in args)
