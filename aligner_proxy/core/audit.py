"""The audit log's store: one SQLite row per checked answer, its schema, retention, and the reads behind
``aligner-proxy audit`` and the review page.

The proxy writes through :class:`~aligner_proxy.server.audit.AuditWriter` (a
queue and a thread, off the request path); this module is the part with no
web server in it, so the CLI and tests open the same file with the same
schema. SQLite in WAL mode: a reader never blocks the writer, and a process
killed mid-write leaves the last committed transaction intact (the WAL is
replayed or discarded on the next open, never half-applied).
``synchronous=NORMAL`` keeps that guarantee against a process crash; only an
OS crash or power loss can take the last transactions back.
"""

from __future__ import annotations

import importlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from aligner_proxy.core.redact import redact_text
from aligner_proxy.core.vocabulary import Status

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 32_768
"""Each text is cut to this many characters: a queue of rows must stay small in memory whatever the answers."""

FLAGGED_STATUSES: tuple[Status, ...] = ("modified", "flagged", "blocked")
"""The statuses of answers the gate scored above the threshold (corrected, still unsafe, or refused)."""

_COLUMNS = (
    "time",
    "request_id",
    "endpoint",
    "model",
    "choice",
    "mode",
    "status",
    "threshold",
    "cost_before",
    "cost_after",
    "question",
    "original",
    "final",
    "upstream_ms",
    "scorer_ms",
    "corrector_ms",
    "total_ms",
    "corrector_prompt_tokens",
    "corrector_completion_tokens",
    "error",
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    request_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    choice INTEGER NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    threshold REAL,
    cost_before REAL,
    cost_after REAL,
    question TEXT NOT NULL,
    original TEXT NOT NULL,
    final TEXT NOT NULL,
    upstream_ms REAL NOT NULL,
    scorer_ms REAL NOT NULL,
    corrector_ms REAL NOT NULL,
    total_ms REAL NOT NULL,
    corrector_prompt_tokens INTEGER NOT NULL,
    corrector_completion_tokens INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS answers_time ON answers (time);
CREATE INDEX IF NOT EXISTS answers_status ON answers (status, id);
PRAGMA user_version = {SCHEMA_VERSION};
"""


class AuditRecord(BaseModel):
    """One checked answer, as stored and as exported (one JSONL line each)."""

    time: float  # unix seconds
    request_id: str
    endpoint: str  # the HTTP route, e.g. /v1/chat/completions
    model: str  # the served model name (the route)
    choice: int = 0
    mode: str
    status: Status
    threshold: float | None = None
    cost_before: float | None = None
    cost_after: float | None = None
    question: str  # what the scorer saw: the last user turn, or the prompt
    original: str  # the upstream's answer
    final: str  # what the client received
    upstream_ms: float = 0.0
    scorer_ms: float = 0.0
    corrector_ms: float = 0.0
    total_ms: float = 0.0
    corrector_prompt_tokens: int = 0
    corrector_completion_tokens: int = 0
    error: str | None = None


class StoredRecord(AuditRecord):
    """A record read back, with its row id."""

    id: int


def clip(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT_CHARS` (marked, so a reader knows it is not the whole answer)."""
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + " [...]"


Redactor = Callable[[AuditRecord], AuditRecord | None]
"""A redaction hook: the record to store (changed or not), or ``None`` to store nothing."""


def redact_secrets(record: AuditRecord) -> AuditRecord:
    """A ready-made hook: key-like tokens (``sk-...``, bearer tokens, JWTs) out of the three texts."""
    return record.model_copy(
        update={
            "question": redact_text(record.question),
            "original": redact_text(record.original),
            "final": redact_text(record.final),
        }
    )


def load_redactor(dotted: str) -> Redactor:
    """The hook named ``package.module:function`` (or ``package.module.function``); raises ``ValueError``
    naming what is wrong, so a bad setting stops the proxy at start-up rather than at the first row."""
    module_name, _, attribute = dotted.partition(":") if ":" in dotted else dotted.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"audit redaction hook {dotted!r}: expected 'module:function'")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"audit redaction hook {dotted!r} cannot be loaded: {exc}") from exc
    if not callable(hook):
        raise ValueError(f"audit redaction hook {dotted!r} is not callable")
    redactor: Redactor = hook
    return redactor


@dataclass(frozen=True)
class Retention:
    """How much the log keeps: rows younger than ``max_age_days`` and at most ``max_rows`` (``None``: no limit)."""

    max_age_days: float | None = None
    max_rows: int | None = None


class AuditStoreError(RuntimeError):
    """The file is missing, not an SQLite database, or not an audit log."""


@dataclass(frozen=True)
class Summary:
    """What ``aligner-proxy audit`` prints."""

    rows: int
    first: float | None
    last: float | None
    by_status: dict[str, int]
    top_flagged: list[tuple[str, int]]


class AuditStore:
    """One connection to an audit log. Not shared between threads: the writer has its own, each read opens one."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> AuditStore:
        """Open (or create) the log for writing: WAL mode, the schema, ``synchronous=NORMAL``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread off: opened by the caller, then used by the writer thread alone.
        connection = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            _check_version(connection, path)
            connection.executescript(_SCHEMA)
        except AuditStoreError:
            connection.close()
            raise
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise AuditStoreError(f"{path}: not an audit log ({exc})") from exc
        return cls(connection, path)

    @classmethod
    def open_readonly(cls, path: str | Path) -> AuditStore:
        """Open an existing log to read; raises :class:`AuditStoreError` saying what is wrong with it."""
        path = Path(path)
        if not path.is_file():
            raise AuditStoreError(f"{path}: no such file")
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise AuditStoreError(f"{path}: not an SQLite database ({exc})") from exc
        if "answers" not in tables:
            connection.close()
            raise AuditStoreError(f"{path}: an SQLite database, but not an audit log (no 'answers' table)")
        return cls(connection, path)

    def close(self) -> None:
        self.connection.close()

    # -- writing

    def insert(self, records: Sequence[AuditRecord]) -> None:
        """Insert ``records`` in one transaction: all of them are stored, or none."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        rows = [tuple(getattr(record, column) for column in _COLUMNS) for record in records]
        with self._transaction():
            self.connection.executemany(
                f"INSERT INTO answers ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                rows,
            )

    def prune(self, retention: Retention, *, now: float | None = None) -> int:
        """Delete what ``retention`` does not keep; returns how many rows went."""
        deleted = 0
        with self._transaction():
            if retention.max_age_days is not None:
                cutoff = (time.time() if now is None else now) - retention.max_age_days * 86400.0
                deleted += self.connection.execute("DELETE FROM answers WHERE time < ?", (cutoff,)).rowcount
            if retention.max_rows is not None:
                deleted += self.connection.execute(
                    "DELETE FROM answers WHERE id <= (SELECT id FROM answers ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (retention.max_rows,),
                ).rowcount
        return deleted

    def _transaction(self) -> _Transaction:
        return _Transaction(self.connection)

    # -- reading

    def count(self) -> int:
        return int(self.connection.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def recent(self, *, limit: int = 100, status: str | None = None) -> list[StoredRecord]:
        """The newest ``limit`` rows, newest first, of one ``status`` or all."""
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        cursor = self.connection.execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM answers {where} ORDER BY id DESC LIMIT ?", (*args, limit)
        )
        return [_record(cursor.description, row) for row in cursor]

    def iter_all(self, *, status: str | None = None) -> Iterator[StoredRecord]:
        """Every row, oldest first (read in pages, so a large log is never in memory at once)."""
        last = 0
        while True:
            where = "WHERE id > ?" + (" AND status = ?" if status else "")
            args = (last, status) if status else (last,)
            cursor = self.connection.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM answers {where} ORDER BY id LIMIT 1000", args
            )
            page = [_record(cursor.description, row) for row in cursor]
            if not page:
                return
            yield from page
            last = page[-1].id

    def summary(self, *, top: int = 10) -> Summary:
        """Counts by status, the time span, and the questions whose answers the gate flagged most often."""
        rows, first, last = self.connection.execute("SELECT COUNT(*), MIN(time), MAX(time) FROM answers").fetchone()
        by_status = dict(
            self.connection.execute("SELECT status, COUNT(*) FROM answers GROUP BY status ORDER BY COUNT(*) DESC")
        )
        marks = ", ".join("?" for _ in FLAGGED_STATUSES)
        top_flagged = list(
            self.connection.execute(
                f"SELECT question, COUNT(*) AS n FROM answers WHERE status IN ({marks}) "
                "GROUP BY question ORDER BY n DESC, MAX(id) DESC LIMIT ?",
                (*FLAGGED_STATUSES, top),
            )
        )
        return Summary(rows=int(rows), first=first, last=last, by_status=by_status, top_flagged=top_flagged)

    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``ok``, or what is broken."""
        return "; ".join(row[0] for row in self.connection.execute("PRAGMA integrity_check"))


class _Transaction:
    """``BEGIN`` ... ``COMMIT`` on an autocommit connection, ``ROLLBACK`` on error."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.connection.execute("ROLLBACK" if exc_type else "COMMIT")


def _check_version(connection: sqlite3.Connection, path: Path) -> None:
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise AuditStoreError(f"{path}: audit log schema {version} is newer than this version reads ({SCHEMA_VERSION})")


def _record(description: Iterable[Sequence[object]], row: Sequence[object]) -> StoredRecord:
    return StoredRecord.model_validate({str(column[0]): value for column, value in zip(description, row, strict=True)})
