"""Input rows with a stable id, from JSONL, CSV, Parquet, a ``datasets`` directory or a Hub id.

Resuming a run means recognising rows already done, so every row gets an id
that does not change between runs: the value of ``id_field`` when one is
named, otherwise a hash of the row's canonical JSON (:func:`row_hash`).

A row that cannot be read (a JSONL line that is not JSON, or not an object) is
not an exception: it comes out as an :class:`InputRow` with ``error`` set, so
the runner writes an error row and goes on. Sources are re-iterable (the
runner reads them twice: once to count what is left, once to work), and they
stream, so a large file is never held in memory.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
    """Rows of a local file, a ``datasets`` directory, or a Hub dataset id.

    Files are picked by suffix (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.csv``,
    ``.parquet``). A directory written by ``Dataset.save_to_disk`` is read with
    ``datasets.load_from_disk``; any other directory, and a name that is no
    local path but looks like ``owner/name``, go through ``datasets.load_dataset``.
    """

    def __init__(self, source: str | Path, *, id_field: str | None = None, split: str = "train") -> None:
        self.source = str(source)
        self._path = Path(source).expanduser()
        self._id_field = id_field
        self._split = split
        self._dataset: Any = None
        if not self._path.exists() and not (_HUB_ID.match(self.source) and not self.source.startswith(".")):
            raise FileNotFoundError(f"no such file, directory or Hub dataset id: {self.source}")
        if self._path.is_file() and _suffix(self._path) is None:
            raise ValueError(f"unsupported input type {self._path.name!r}: use .jsonl, .json, .csv or .parquet")

    @property
    def name(self) -> str:
        return self._path.name if self._path.exists() else self.source

    def rows(self) -> Iterator[InputRow]:
        if self._path.is_file():
            suffix = _suffix(self._path)
            if suffix == ".jsonl":
                yield from self._jsonl()
            elif suffix == ".json":
                yield from self._json()
            elif suffix == ".csv":
                yield from self._csv()
            else:
                yield from self._parquet()
        else:
            yield from self._datasets()

    def _emit(self, index: int, data: object, where: str) -> InputRow:
        return _make_row(index, data, where, self._id_field)

    def _jsonl(self) -> Iterator[InputRow]:
        index = 0
        with _open_text(self._path) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{self._path.name}:{number}"
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raw = line.rstrip("\n")
                    yield InputRow(index, row_hash(raw), {}, where, error=f"not valid JSON ({exc.msg})")
                else:
                    yield self._emit(index, data, where)
                index += 1

    def _json(self) -> Iterator[InputRow]:
        with _open_text(self._path) as handle:
            data = json.load(handle)
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"data": [...]}
        if not isinstance(data, list):
            raise ValueError(f"{self._path}: expected a JSON list of objects")
        for index, item in enumerate(data):
            yield self._emit(index, item, f"{self._path.name}[{index}]")

    def _csv(self) -> Iterator[InputRow]:
        csv.field_size_limit(1 << 30)
        with _open_text(self._path) as handle:
            reader = csv.DictReader(handle)
            for index, row in enumerate(reader):
                where = f"{self._path.name}:{reader.line_num}"
                if None in row or any(v is None for v in row.values()):
                    data = {k: v for k, v in row.items() if k is not None}
                    yield InputRow(index, row_hash(data), data, where, error="wrong number of CSV cells")
                else:
                    yield self._emit(index, dict(row), where)

    def _parquet(self) -> Iterator[InputRow]:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise RuntimeError(f"reading {self._path} needs pyarrow: pip install pyarrow") from exc
        index = 0
        for batch in pq.ParquetFile(self._path).iter_batches():
            for data in batch.to_pylist():
                yield self._emit(index, data, f"{self._path.name}[{index}]")
                index += 1

    def _datasets(self) -> Iterator[InputRow]:
        dataset = self._load_dataset()
        for index, data in enumerate(dataset):
            yield self._emit(index, dict(data), f"{self.name}[{index}]")

    def _load_dataset(self) -> Any:
        if self._dataset is not None:
            return self._dataset
        try:
            import datasets
        except ImportError as exc:
            raise RuntimeError(f"reading {self.source} needs the `datasets` package: pip install datasets") from exc
        if self._path.is_dir() and any((self._path / f).is_file() for f in ("state.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(str(self._path))
            if isinstance(loaded, datasets.DatasetDict):
                if self._split not in loaded:
                    raise ValueError(f"{self.source} has no split {self._split!r} (has {', '.join(loaded)})")
                loaded = loaded[self._split]
        else:
            logger.info("loading %s (split %s) with datasets.load_dataset", self.source, self._split)
            loaded = datasets.load_dataset(str(self._path) if self._path.is_dir() else self.source, split=self._split)
        self._dataset = loaded
        return loaded


def _suffix(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    return next((s for s in (".jsonl", ".json", ".csv", ".parquet") if name.endswith(s)), None)


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig: spreadsheet exports start with a BOM that would glue onto the first column name;
    # undecodable bytes become U+FFFD rather than ending the run.
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return path.open("r", encoding="utf-8-sig", errors="replace", newline="")
