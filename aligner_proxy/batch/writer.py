"""An append-only JSONL output that a ``kill -9`` cannot corrupt, and that tells a re-run what is done.

Guarantees, and how they are kept:

- **No broken line.** Each batch is encoded first and appended with
  ``os.write`` on an ``O_APPEND`` descriptor (looping only if the kernel
  takes part of it), then fsynced. A process killed mid-write can at worst
  leave a torn *last* line; :meth:`ResumableWriter.open` cuts the file back to
  its last newline before anything else is written, so the next run starts on
  a clean file.
- **No duplicate.** Every record carries an id (``row_id``); ``open`` reads
  the ids already present and the runner skips them. Retrying failed rows
  (:meth:`ResumableWriter.drop_failed`) first rewrites the file without them
  (temporary file + ``os.replace``, atomic), so a row is never present twice.
- **One writer.** The file is ``flock``-ed for the whole run; a second run on
  the same output fails fast with :class:`OutputLockedError` instead of
  interleaving.

At most the batches in flight when the process died are lost; they are redone
on the next run.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

ID_KEY = "row_id"


class OutputLockedError(RuntimeError):
    """Another process is writing the same output file."""


class ResumableWriter:
    """Append JSON records to ``path``; ``done`` maps the ids already written to whether they failed.

    A record counts as failed when its ``error`` field is not null. Use as a
    context manager, or call :meth:`open` and :meth:`close`.
    """

    def __init__(self, path: str | Path, *, id_key: str = ID_KEY, fsync: bool = True) -> None:
        self.path = Path(path)
        self.id_key = id_key
        self.fsync = fsync
        self.done: dict[str, bool] = {}
        self.repaired_bytes = 0
        self.unreadable_lines = 0
        self._fd: int | None = None

    def __enter__(self) -> ResumableWriter:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- opening

    def open(self) -> None:
        """Lock the file, cut a torn last line, and read which ids are done."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = open_locked(self.path)
        self._repair_tail()
        self.done.clear()
        self.unreadable_lines = 0
        for record in self._records():
            if record is None:
                self.unreadable_lines += 1
                continue
            self.done[str(record[self.id_key])] = record.get("error") is not None
        if self.unreadable_lines:
            logger.warning("%s: %d unreadable lines ignored (their rows are redone)", self.path, self.unreadable_lines)

    def _repair_tail(self) -> None:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        # Read backwards in blocks to the last newline; a file without one is all torn.
        end, block = size, 1 << 16
        keep = 0
        while end > 0:
            start = max(0, end - block)
            chunk = os.pread(self._fd, end - start, start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        if keep < size:
            self.repaired_bytes = size - keep
            logger.warning("%s: cutting a torn last line (%d bytes) left by an interrupted run", self.path, size - keep)
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)

    def _records(self) -> Iterator[dict[str, Any] | None]:
        with self.path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    yield None
                    continue
                yield record if isinstance(record, dict) and record.get(self.id_key) is not None else None

    # -- writing

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append ``records`` as one write, then flush (and fsync); their ids become done."""
        if self._fd is None:
            raise RuntimeError("ResumableWriter.append before open()")
        if not records:
            return
        view = memoryview(encode_records(records))
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync:
            os.fsync(self._fd)
        for record in records:
            self.done[str(record[self.id_key])] = record.get("error") is not None

    def drop_failed(self) -> int:
        """Rewrite the file without its failed records (atomically) so they can be redone; returns how many."""
        if self._fd is None:
            raise RuntimeError("ResumableWriter.drop_failed before open()")
        failed = {key for key, is_failed in self.done.items() if is_failed}
        if not failed:
            return 0
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        fd = open_locked(tmp, truncate=True)
        try:
            with self.path.open("rb") as handle:
                kept = bytearray()
                for line in handle:
                    try:
                        record = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue  # unreadable lines go too: their rows are redone anyway
                    if isinstance(record, dict) and str(record.get(self.id_key)) not in failed:
                        kept += line if line.endswith(b"\n") else line + b"\n"
            os.write(fd, bytes(kept))
            os.fsync(fd)
            os.replace(tmp, self.path)  # our lock on fd moves with the inode
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd
        fsync_dir(self.path.parent)
        for key in failed:
            del self.done[key]
        logger.info("%s: dropped %d failed rows to redo them", self.path, len(failed))
        return len(failed)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def encode_records(records: Sequence[Mapping[str, Any]]) -> bytes:
    """JSONL bytes of ``records``, one line each: the one encoding every batch output uses."""
    return "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n" for r in records).encode("utf-8")


def write_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to a temporary name beside ``path``, then rename: readers see all of it or nothing."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def open_locked(path: Path, *, truncate: bool = False) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputLockedError(f"{path} is being written by another run") from None
    return fd


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every readable JSON object in a JSONL file (a torn or broken line is skipped)."""
    records = []
    with Path(path).open("rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def write_parquet(jsonl_path: str | Path, parquet_path: str | Path) -> int:
    """Convert a finished JSONL output to Parquet (atomically); returns the row count.

    Columns are the union of every record's keys; a field whose values mix
    types across rows (a number in one, a string in another) cannot be a
    Parquet column and raises ``ValueError`` naming it.
    """
    return records_to_parquet(read_records(jsonl_path), parquet_path)


def records_to_parquet(records: Sequence[Mapping[str, Any]], parquet_path: str | Path) -> int:
    """Write ``records`` as one Parquet file (atomically); returns the row count. See :func:`write_parquet`."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise RuntimeError("writing Parquet needs pyarrow: pip install pyarrow") from exc
    keys = list(dict.fromkeys(key for record in records for key in record))
    columns = {}
    for key in keys:
        try:
            columns[key] = pa.array([record.get(key) for record in records])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"field {key!r} mixes types across rows and cannot be a Parquet column: {exc}") from exc
    target = Path(parquet_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    pq.write_table(pa.table(columns) if columns else pa.table({}), tmp)
    os.replace(tmp, target)
    return len(records)
