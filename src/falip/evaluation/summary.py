"""Summaries of a results file: accuracy with a Wilson 95% interval per system, as markdown, CSV
and JSON. A result's "correct" is 0 or 1, or under `--ties chance` a fraction (the expected accuracy of
breaking a tie between boxes at random)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from .stats import Accuracy
from .store import write_atomic

METRICS = ("top1", "top5", "correct")


def summarise(records: list[dict]) -> dict[str, dict]:
    """{system: {metric: Accuracy-as-dict}, plus "worst_group" and "groups" ({group: Accuracy-as-dict},
    in the records' order) when records carry groups}."""
    systems: dict[str, dict[str, list[float]]] = {}
    groups: dict[str, dict[str, list[float]]] = {}
    for record in records:
        for system, result in record["results"].items():
            bucket = systems.setdefault(system, {})
            for metric in METRICS:
                if metric in result:
                    bucket.setdefault(metric, []).append(float(result[metric]))
            if record.get("group") is not None:
                key = "top1" if "top1" in result else "correct"
                groups.setdefault(system, {}).setdefault(record["group"], []).append(float(result[key]))
    used = [r["negatives"]["used"] for r in records if r.get("negatives")]
    asked = max((r["negatives"]["asked"] for r in records if r.get("negatives")), default=0)
    out = {}
    for system, metrics in systems.items():
        out[system] = {m: Accuracy(sum(v), len(v)).to_dict() for m, v in metrics.items()}
        if system in groups:
            worst = min(groups[system].items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
            out[system]["worst_group"] = {
                "group": worst[0],
                **Accuracy(sum(worst[1]), len(worst[1])).to_dict(),
            }
            out[system]["groups"] = {g: Accuracy(sum(v), len(v)).to_dict() for g, v in groups[system].items()}
        if used:  # subtract: negatives asked, and how many each expression really had
            out[system]["negatives"] = {
                "asked": asked,
                "min": min(used),
                "mean": sum(used) / len(used),
                "max": max(used),
                "fewer": sum(u < asked for u in used),
                "n": len(used),
            }
    return out


def negatives_note(summary: dict[str, dict]) -> str:
    """One line on subtract's negatives when some expressions had fewer than asked (else "")."""
    entry = next((s["negatives"] for s in summary.values() if "negatives" in s), None)
    if not entry or not entry["fewer"]:
        return ""
    return (
        f"Subtract: {entry['asked']} negative captions asked per expression; {entry['fewer']} of "
        f"{entry['n']} expressions had fewer ({entry['min']} to {entry['max']}, mean {entry['mean']:.1f}): "
        "the data set's expressions of other images hold no more.\n"
    )


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("accuracy") is None:
        return "-"
    lo, hi = entry["ci95"]
    return f"{100 * entry['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown(summary: dict[str, dict]) -> str:
    """A markdown table of a `summarise` result: one row per system with its n, and per metric present
    `accuracy % [95% CI]` in percent ("-" when it has no examples)."""
    metrics = [m for m in (*METRICS, "worst_group") if any(m in s for s in summary.values())]

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    rows = [row(["system", "n", *(f"{m} % [95% CI]" for m in metrics)]), "|" + "---|" * (len(metrics) + 2)]
    for system, entry in summary.items():
        n = next(iter(entry.values()))["n"]
        rows.append(row([system, str(n), *(_cell(entry.get(m)) for m in metrics)]))
    names = list(dict.fromkeys(g for entry in summary.values() for g in entry.get("groups", {})))
    if names:  # accuracy per group, each column headed by its group and its size
        sizes = {
            g: next(e["groups"][g]["n"] for e in summary.values() if g in e.get("groups", {})) for g in names
        }
        rows += ["", row(["system", *(f"{g} (n={sizes[g]})" for g in names)])]
        rows.append("|" + "---|" * (len(names) + 1))
        for system, entry in summary.items():
            if "groups" in entry:
                rows.append(row([system, *(_cell(entry["groups"].get(g)) for g in names)]))
    note = negatives_note(summary)
    return "\n".join(rows) + "\n" + (f"\n{note}" if note else "")


def to_csv(summary: dict[str, dict]) -> str:
    """CSV text of a `summarise` result: one row per (system, metric) with accuracy, the 95% interval's
    bounds (fractions) and n."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["system", "metric", "accuracy", "ci95_low", "ci95_high", "n"])
    for system, entry in summary.items():
        for metric, value in entry.items():
            if metric == "groups":
                for group, acc in value.items():
                    writer.writerow([system, f"group:{group}", acc["accuracy"], *acc["ci95"], acc["n"]])
                continue
            if "accuracy" in value:  # not subtract's negatives count (in summary.json and summary.md)
                writer.writerow([system, metric, value["accuracy"], *value["ci95"], value["n"]])
    return buffer.getvalue()


def write_summary(folder: Path, records: list[dict], skipped: Sequence[str] = ()) -> dict[str, dict]:
    """summary.json, .csv and .md, each written atomically (never left empty by a failure); what the
    data set's loader or the run left out goes to skipped.json, counted at the foot of summary.md."""
    summary = summarise(records)
    folder = Path(folder)
    write_atomic(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(folder / "summary.csv", to_csv(summary))
    text = markdown(summary)
    write_skipped(folder, skipped)
    if skipped:
        text += (
            f"\nSkipped {len(skipped)} bad example(s) or annotation(s), each named in skipped.json"
            " (--strict stops at the first).\n"
        )
    write_atomic(folder / "summary.md", text)
    return summary


def write_skipped(folder: Path, skipped: Sequence[str]) -> None:
    """skipped.json (count and one line per item left out), written atomically; removed when nothing was."""
    folder = Path(folder)
    if skipped:
        write_atomic(
            folder / "skipped.json",
            json.dumps({"count": len(skipped), "skipped": list(skipped)}, indent=2) + "\n",
        )
    else:
        (folder / "skipped.json").unlink(missing_ok=True)
