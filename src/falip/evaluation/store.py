"""Results on disk: one JSON line per example, appended as it is done, so a run resumes.

The run's settings are saved beside the results (`config.json`); resuming with other settings is
refused instead of silently mixing two runs. Nothing is lost or doubled:

- a damaged line (a write cut short, a stray edit) is dropped alone; the lines after it stay, and
  the file is rewritten without it (atomically) before new lines are appended;
- a key already recorded is never recorded twice (a second copy on disk is dropped the same way);
- one folder serves one run at a time: `results.lock` is held (an OS file lock, released even if the
  process is killed) and names its holder; a second run on the folder stops with an error;
- `config.json` and the summaries are written to a temporary file and renamed into place, so an
  interrupted write leaves the old file, never an empty one.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ..errors import FalipError

RESULTS = "results.jsonl"
CONFIG = "config.json"
LOCK = "results.lock"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise FalipError(f"cannot write {path}: {exc.strerror or exc}") from None


class ResultStore:
    def __init__(self, folder: Path, config: dict, overwrite: bool = False):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FalipError(f"cannot create the output folder {self.folder}: {exc.strerror or exc}") from None
        self._lock = self._take_lock()
        self.path = self.folder / RESULTS
        config_path = self.folder / CONFIG
        if overwrite:
            self.path.unlink(missing_ok=True)
        elif config_path.is_file() and self.path.is_file():
            try:
                saved = json.loads(config_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise FalipError(f"{config_path} is damaged (not JSON): delete it, or use --overwrite to start again") from None
            if saved != config:
                changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise FalipError(
                    f"{self.folder} holds a run with other settings ({', '.join(changed)} differ): "
                    "use another --out, or --overwrite to start again"
                )
        write_atomic(config_path, json.dumps(config, indent=2) + "\n")
        self.dropped = 0  # damaged or repeated lines dropped from the file on opening
        self.records = self._read()

    def _take_lock(self):
        """Hold `results.lock` for this process, or say who holds it."""
        import fcntl

        path = self.folder / LOCK
        try:
            handle = open(path, "a+")
        except OSError as exc:
            raise FalipError(f"cannot write to the output folder {self.folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FalipError(f"{self.folder} is in use by another run ({holder}): wait for it, or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        return handle

    def close(self) -> None:
        """Let another run use the folder (also done when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text().splitlines()
        records, seen, kept = [], set(), []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line: dropped alone
            if not isinstance(record, dict) or "key" not in record or record["key"] in seen:
                continue
            seen.add(record["key"])
            records.append(record)
            kept.append(line)
        self.dropped = len(lines) - len(kept)
        if self.dropped:
            write_atomic(self.path, "".join(line + "\n" for line in kept))
        return records

    @property
    def done(self) -> set[str]:
        return {r["key"] for r in self.records}

    def add(self, records: list[dict]) -> None:
        done = self.done
        fresh = [r for r in records if r["key"] not in done]
        try:
            with open(self.path, "a") as handle:
                for record in fresh:
                    handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise FalipError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.records.extend(fresh)
