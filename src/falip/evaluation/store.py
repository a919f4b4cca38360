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

from filelock import FileLock, Timeout

from ..errors import FalipError
from ..inputs.files import lines as split_lines
from .distributed import Shard, all_ok, barrier

RESULTS = "results.jsonl"
CONFIG = "config.json"
LOCK = "results.lock"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename, so a failure
    leaves the old file; FalipError (the temporary file removed) when it cannot be written."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise FalipError(f"cannot write {path}: {exc.strerror or exc}") from None


class ResultStore:
    """One run's results in a folder, resumable (the module docstring gives the guarantees).

    `records` holds this rank's records, `others` those in the folder's other results files; `add`
    appends, `finish` merges the ranks' files, `close` releases the folder."""

    def __init__(self, folder: Path, config: dict, overwrite: bool = False, shard: Shard = Shard()):
        """Open (or create) `folder` for the run described by `config` (a JSON-serialisable dict of its
        settings), as rank `shard` of a torchrun run.

        Takes the folder's lock; rank 0 compares `config` with the saved `config.json` and writes it
        (`overwrite`: earlier results are deleted first); then this rank's file is read, damaged or
        repeated lines dropped (their count in `dropped`). Raises FalipError when the folder cannot be
        created or written, another run holds it, it holds a run with other settings or a damaged
        `config.json`, another rank failed to start, or this rank's settings differ from rank 0's."""
        self.folder = Path(folder)
        self.shard = shard
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FalipError(
                f"cannot create the output folder {self.folder}: {exc.strerror or exc}"
            ) from None
        self._lock = None
        self.path = self.folder / (RESULTS if shard.world == 1 else f"results.rank{shard.rank}.jsonl")
        problem = None
        try:
            self._lock = self._take_lock()
            if shard.main:
                self._check_config(config, overwrite)
        except FalipError as exc:
            problem = exc
        if not all_ok(shard, problem is None):
            self.close()
            raise problem or FalipError(
                f"another rank of this run stopped before starting ({self.folder}): see its error"
            )
        barrier(shard)  # rank 0 has checked and written config.json
        if not shard.main and json.loads((self.folder / CONFIG).read_text()) != config:
            raise FalipError(f"rank {shard.rank} was started with other settings than rank 0")
        self.dropped = 0  # damaged or repeated lines dropped from this rank's file on opening
        self.records = self._read(self.path, rewrite=True)
        self.others = [r for path in self._all_files() if path != self.path for r in self._read(path)]

    def _check_config(self, config: dict, overwrite: bool) -> None:
        config_path = self.folder / CONFIG
        if overwrite:
            for path in self._all_files():
                path.unlink(missing_ok=True)
        elif config_path.is_file() and any(p.is_file() for p in self._all_files()):
            try:
                saved = json.loads(config_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise FalipError(
                    f"{config_path} is damaged (not JSON): delete it, or use --overwrite to start again"
                ) from None
            if saved != config:
                changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise FalipError(
                    f"{self.folder} holds a run with other settings ({', '.join(changed)} differ): "
                    "use another --out, or --overwrite to start again"
                )
        write_atomic(config_path, json.dumps(config, indent=2) + "\n")

    def _all_files(self) -> list[Path]:
        """The merged results and every rank's, that exist."""
        return [
            p
            for p in [self.folder / RESULTS, *sorted(self.folder.glob("results.rank*.jsonl"))]
            if p.is_file()
        ]

    def _take_lock(self) -> FileLock:
        """Hold this rank's lock on the folder for this process (`filelock`: fcntl on POSIX, msvcrt on
        Windows), or say who holds it (the holder writes itself into a file beside the lock)."""
        name = LOCK if self.shard.main else f"results.rank{self.shard.rank}.lock"
        path, holder_path = self.folder / name, self.folder / f"{name}.holder"
        lock = FileLock(path, is_singleton=False, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = holder_path.read_text().strip() if holder_path.is_file() else ""
            raise FalipError(
                f"{self.folder} is in use by another run ({holder or 'another process'}): "
                "wait for it, or use another --out"
            ) from None
        except OSError as exc:
            raise FalipError(
                f"cannot write to the output folder {self.folder}: {exc.strerror or exc}"
            ) from None
        holder_path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        return lock

    def close(self) -> None:
        """Let another run use the folder (also done when the process ends)."""
        if self._lock is not None:
            self._lock.release()
            holder = Path(self._lock.lock_file + ".holder")
            holder.unlink(missing_ok=True)
            self._lock = None
            if not self.shard.main:
                (self.folder / f"results.rank{self.shard.rank}.lock").unlink(missing_ok=True)

    def _read(self, path: Path, rewrite: bool = False) -> list[dict]:
        """A results file's records; damaged and repeated lines dropped (and, with `rewrite`, removed
        from the file)."""
        if not path.is_file():
            return []
        lines = split_lines(path.read_text(encoding="utf-8"))
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
        if rewrite and len(kept) < len(lines):
            self.dropped = len(lines) - len(kept)
            write_atomic(path, "".join(line + "\n" for line in kept))
        return records

    def finish(self, order: list[str], ok: bool = True) -> list[dict]:
        """Every rank's records, merged by rank 0 into `results.jsonl` in `order` (the data set's
        order of keys); the per-rank files go. Every rank waits for the merge; if any rank failed
        (`ok` False on some rank), all stop with a FalipError."""
        if not all_ok(self.shard, ok):
            raise FalipError("another rank of this run failed: see its error; rerun to resume")
        barrier(self.shard)
        main = self.folder / RESULTS
        if self.shard.main:
            merged: dict[str, dict] = {}
            for path in self._all_files():
                for record in self._read(path):
                    merged.setdefault(record["key"], record)
            rank = {key: i for i, key in enumerate(order)}
            records = sorted(merged.values(), key=lambda r: rank.get(r["key"], len(rank)))
            write_atomic(main, "".join(json.dumps(r) + "\n" for r in records))
            for path in self.folder.glob("results.rank*.jsonl"):
                path.unlink()
        barrier(self.shard)
        return self._read(main)

    @property
    def done(self) -> set[str]:
        """Keys recorded in any of the folder's results files (this rank's and the others')."""
        return {r["key"] for r in self.records} | {r["key"] for r in self.others}

    def add(self, records: list[dict]) -> None:
        """Append `records` (dicts with a "key") to this rank's file, one JSON line each, skipping keys
        already recorded; FalipError when the file cannot be written."""
        done = self.done
        fresh = [r for r in records if r["key"] not in done]
        try:
            with open(self.path, "a") as handle:
                for record in fresh:
                    handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise FalipError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.records.extend(fresh)
