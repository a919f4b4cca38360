"""Results on disk: one JSON line per example, appended as it is done, so a run resumes.

The run's settings are saved beside the results (`config.json`); resuming with other settings is
refused instead of silently mixing two runs. A line cut short by an interruption is dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FalipError

RESULTS = "results.jsonl"
CONFIG = "config.json"


class ResultStore:
    def __init__(self, folder: Path, config: dict, overwrite: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / RESULTS
        config_path = self.folder / CONFIG
        if overwrite:
            self.path.unlink(missing_ok=True)
        elif config_path.is_file() and self.path.is_file():
            saved = json.loads(config_path.read_text())
            if saved != config:
                changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise FalipError(
                    f"{self.folder} holds a run with other settings ({', '.join(changed)} differ): "
                    "use another --out, or --overwrite to start again"
                )
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        self.records = self._read()

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text().splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # an interrupted write: everything before it stands
        if len(records) < len(lines):  # drop the cut line, so appends start on a clean line
            self.path.write_text("".join(line + "\n" for line in lines[: len(records)]))
        return records

    @property
    def done(self) -> set[str]:
        return {r["key"] for r in self.records}

    def add(self, records: list[dict]) -> None:
        with open(self.path, "a") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        self.records.extend(records)
