"""The durable side of the job queue: a SQLite job table and result files on disk.

Why: the queue lives in memory; a restart (an update, a crash, a reboot of the GPU
box) would lose every queued job and every result not yet downloaded. The journal
records each job before the server acknowledges it, each state change, and each
result (written atomically to the outputs folder), so a new server process can pick
up where the last one stopped (`JobQueue.recover`).

SQLite in WAL mode with `synchronous=FULL`: a committed row survives a killed process
and a power cut. A database that cannot be read at start is moved aside (with a
message in the log) and a new one begins, so a damaged file never stops the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DB_NAME = "jobs.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    client_id TEXT,
    payload BLOB NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""


class JournalError(Exception):
    """The journal could not record something; the message says what and where."""


@dataclass(frozen=True)
class StoredResult:
    index: int
    seed: int
    path: Path
    size: int


@dataclass
class StoredJob:
    """A job as the journal last recorded it."""

    job_id: str
    client_id: str | None
    payload: bytes
    status: str
    error_code: str | None
    error_message: str | None
    ended_at: float | None  # wall-clock seconds
    results: list[StoredResult] = field(default_factory=list)


class Journal:
    """One server's job table and results folder. Thread-safe."""

    def __init__(self, state_dir: Path, outputs_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self.outputs_dir = outputs_dir or state_dir / "outputs"
        self._lock = threading.Lock()
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                f"The server's state folder {state_dir} cannot be created ({exc.strerror}); "
                "set state_dir to a writable folder."
            ) from exc
        self._db = self._open(state_dir / DB_NAME)

    # -- opening -----------------------------------------------------------------------

    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            return _connect(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            log.error(
                "The job database %s cannot be read (%s); it was moved to %s and the "
                "server starts with an empty queue.",
                path,
                exc,
                aside,
            )
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
            return _connect(path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -----------------------------------------------------------------------

    def add(self, job_id: str, client_id: str | None, payload: bytes) -> None:
        """Record a new job; returns once it is on disk (the server then acknowledges)."""
        self._write(
            "INSERT INTO jobs (id, client_id, payload, status) VALUES (?, ?, ?, 'queued')",
            (job_id, client_id, payload),
        )

    def set_status(
        self, job_id: str, status: str, error: tuple[str, str] | None = None, ended: bool = False
    ) -> None:
        code, message = error if error is not None else (None, None)
        self._write(
            "UPDATE jobs SET status = ?, error_code = ?, error_message = ?, ended_at = ? "
            "WHERE id = ?",
            (status, code, message, time.time() if ended else None, job_id),
        )

    def add_result(self, job_id: str, index: int, seed: int, png: bytes) -> Path:
        """Write one result's PNG atomically into the outputs folder and record it."""
        folder = self.outputs_dir / time.strftime("%Y-%m-%d")
        path = folder / f"{job_id}-{index}.png"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, png)
        except OSError as exc:
            raise JournalError(
                f"The result could not be saved to {folder} ({exc.strerror or exc}); it stays "
                "available from the server until it restarts."
            ) from exc
        self._write(
            "INSERT OR REPLACE INTO results (job_id, idx, seed, path, bytes) "
            "VALUES (?, ?, ?, ?, ?)",
            (job_id, index, seed, str(path), len(png)),
        )
        return path

    def clear_results(self, job_id: str) -> None:
        """Drop a job's partial results before it runs again (no duplicates)."""
        for result in self._results(job_id):
            with contextlib.suppress(OSError):
                result.path.unlink()
        self._write("DELETE FROM results WHERE job_id = ?", (job_id,))

    def forget(self, job_id: str) -> None:
        """The job left the retention window: its row and result files go."""
        self.clear_results(job_id)
        self._write("DELETE FROM jobs WHERE id = ?", (job_id,))

    # -- reading -----------------------------------------------------------------------

    def load(self) -> list[StoredJob]:
        """Every recorded job, oldest first, with its results."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, client_id, payload, status, error_code, error_message, ended_at "
                "FROM jobs ORDER BY seq"
            ).fetchall()
        jobs = [StoredJob(*row) for row in rows]
        for job in jobs:
            job.results = self._results(job.job_id)
        return jobs

    def _results(self, job_id: str) -> list[StoredResult]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, seed, path, bytes FROM results WHERE job_id = ? ORDER BY idx",
                (job_id,),
            ).fetchall()
        return [StoredResult(index, seed, Path(path), size) for index, seed, path, size in rows]

    def _write(self, sql: str, parameters: tuple[object, ...]) -> None:
        try:
            with self._lock, self._db:
                self._db.execute(sql, parameters)
        except sqlite3.Error as exc:
            raise JournalError(
                f"The job database in {self.state_dir} could not be written ({exc}); check "
                "that its disk has space."
            ) from exc


def read_result(path: Path) -> bytes | None:
    """A stored result's PNG, or None when its file is gone."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # transactions from here on (the `with db:` blocks)
    return db


def _write_atomically(path: Path, data: bytes) -> None:
    """Temporary file, fsync, rename: a reader sees the whole file or none of it."""
    partial = path.with_name(f".{path.name}.part")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
