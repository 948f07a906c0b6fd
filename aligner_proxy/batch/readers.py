"""Input rows with a stable id, from JSONL, CSV, Parquet, a ``datasets`` directory or a Hub id.

Resuming a run means recognising rows already done, so every row gets an id
that does not change between runs: the value of ``id_field`` when one is
named, otherwise a hash of the row's canonical JSON (:func:`row_hash`).

A row that cannot be read (a JSONL line that is not JSON, or not an object, a
CSV row with the wrong number of cells) is not an exception: it comes out as
an :class:`InputRow` with ``error`` set, so the runner writes an error row and
goes on. Sources are re-iterable (the runner reads them twice: once to count
what is left, once to work), and they stream, so a large JSONL, CSV or Parquet
file is never held in memory. Reading the formats is
:mod:`aligner_proxy.core.files`'s; this module adds the ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aligner_proxy.core.files import RecordSource


class RowError(Exception):
    """A row that cannot be processed; its message becomes the ``error`` field of its output row."""


@dataclass
class InputRow:
    """One input row. ``index`` is its 0-based position; ``where`` says where it came from (for messages)."""

    index: int
    id: str
    data: dict[str, Any]
    where: str
    error: str | None = None


class RowSource(Protocol):
    """Anything the runner can read rows from, more than once, in the same order each time."""

    @property
    def name(self) -> str: ...

    def rows(self) -> Iterator[InputRow]: ...


def row_hash(data: object) -> str:
    """A stable 16-hex-digit id of a row: SHA-256 of its canonical JSON (keys sorted)."""
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _make_row(index: int, data: object, where: str, id_field: str | None) -> InputRow:
    if not isinstance(data, dict):
        kind = type(data).__name__
        return InputRow(index, row_hash(data), {}, where, error=f"expected a JSON object, got {kind}")
    if id_field is None:
        return InputRow(index, row_hash(data), data, where)
    value = data.get(id_field)
    if value is None or isinstance(value, dict | list) or (isinstance(value, str) and not value.strip()):
        return InputRow(index, row_hash(data), data, where, error=f"id field {id_field!r} missing or not a scalar")
    return InputRow(index, str(value), data, where)


class ListSource:
    """Rows already in memory (scripts that build their own inputs)."""

    def __init__(
        self, records: Sequence[Mapping[str, Any]], *, id_field: str | None = None, name: str = "rows"
    ) -> None:
        self._records = [dict(r) for r in records]
        self._id_field = id_field
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def rows(self) -> Iterator[InputRow]:
        for index, record in enumerate(self._records):
            yield _make_row(index, record, f"{self._name}[{index}]", self._id_field)


class FileSource:
    """Rows of a local file, a directory, or a Hub dataset id, read by :class:`~aligner_proxy.core.files.RecordSource`.

    Files are picked by suffix (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.csv``,
    ``.parquet``). A directory written by ``Dataset.save_to_disk`` is read with
    ``datasets.load_from_disk``, a directory of such files file by file; any
    other directory, and a name that is no local path but looks like
    ``owner/name``, go through ``datasets.load_dataset``.
    """

    def __init__(self, source: str | Path, *, id_field: str | None = None, split: str = "train") -> None:
        self.source = str(source)
        self._records = RecordSource(source, split=split)
        self._id_field = id_field

    @property
    def name(self) -> str:
        return self._records.name

    def rows(self) -> Iterator[InputRow]:
        for index, row in enumerate(self._records):
            if row.problem is None:
                yield _make_row(index, row.data, row.where, self._id_field)
            elif row.problem == "csv_cells":
                yield InputRow(index, row_hash(row.data), row.data, row.where, error=row.message)
            else:
                yield InputRow(index, row_hash(row.raw), {}, row.where, error=row.message)
