"""Reading and writing the project's data files: one owner for text, JSONL and tabular records.

Three kinds of reader live here because three kinds of caller exist:

- :func:`iter_jsonl` and :func:`read_jsonl_models` are *strict*: a file the
  project wrote (a corpus split, a scorer's input) must be whole, so the first
  bad line raises a :class:`FileFormatError` that names the file and the line.
- :class:`RecordSource` is *lenient*: public data sets and users' batch inputs
  have bad rows, and a batch run or a corpus build should say which rows were
  bad and go on. Every row comes out as a :class:`SourceRow`; one that cannot be
  parsed carries a :data:`RowProblem` and a message instead of data, and each
  caller decides what a bad row costs (an error row, a counter in a data card).
- :func:`write_jsonl` writes records atomically, so a crash never leaves half
  a split behind.

Text is UTF-8; a byte-order mark is dropped (spreadsheet exports start with
one that would glue onto the first column's name) and ``.gz`` files are read
through gzip.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
"""File types :class:`RecordSource` reads, each also gzipped (``.jsonl.gz``)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SAVE_TO_DISK_MARKERS = ("state.json", "dataset_dict.json")


class FileFormatError(ValueError):
    """A file whose content is not what its name says. The message names the file and, where known, the line."""

    def __init__(self, message: str, *, path: Path, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


# ---------------------------------------------------------------- text and JSONL


def open_text(path: str | Path, *, errors: Literal["strict", "replace"] = "strict") -> IO[str]:
    """``path`` as UTF-8 text (gzip by suffix, a BOM dropped, newlines as written, as ``csv`` needs).

    ``errors="replace"`` turns undecodable bytes into U+FFFD, for readers that
    must not stop on one bad byte of a public data set; the default raises.
    """
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors=errors, newline="")
    return path.open("r", encoding="utf-8-sig", errors=errors, newline="")


def _lines(path: Path, handle: IO[str]) -> Iterator[tuple[int, str]]:
    """The non-blank lines of ``handle`` with their 1-based numbers; a decoding error names the file and line."""
    number = 0
    try:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line
    except UnicodeDecodeError as exc:
        # The decoder reads ahead, so the bad byte is somewhere after the last whole line.
        message = f"{path}: not valid UTF-8 after line {number} ({exc.reason})"
        raise FileFormatError(message, path=path, line=number + 1) from exc


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSONL file (``.gz`` too).

    The values are whatever JSON the lines hold; checking that they are
    objects is the caller's. A line that is not JSON raises
    :class:`FileFormatError` ``"<path>:<line>: not valid JSON (<reason>)"``.
    """
    path = Path(path)
    with open_text(path) as handle:
        for number, line in _lines(path, handle):
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise FileFormatError(f"{path}:{number}: not valid JSON ({exc.msg})", path=path, line=number) from None


def read_jsonl_models(path: str | Path, model: type[M]) -> list[M]:
    """Every non-blank line of a JSONL file validated as ``model`` (a pydantic model).

    A line that is not JSON or not a valid ``model`` raises
    :class:`FileFormatError` naming the file, the line and pydantic's first
    complaint, so a corpus written by another version points at its bad row.
    """
    path = Path(path)
    records: list[M] = []
    with open_text(path) as handle:
        for number, line in _lines(path, handle):
            try:
                records.append(model.model_validate_json(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(map(str, first["loc"])) or "line"
                message = f"{path}:{number}: not a valid {model.__name__} ({where}: {first['msg']})"
                raise FileFormatError(message, path=path, line=number) from exc
    return records


def write_jsonl(path: str | Path, records: Iterable[BaseModel | Mapping[str, Any]]) -> int:
    """Write one JSON object a line, atomically (a temporary file renamed into place); returns the count.

    Pydantic models are written with ``model_dump_json()``; mappings as JSON
    with non-ASCII text kept as it is. Missing parent directories are made.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                if isinstance(record, BaseModel):
                    handle.write(record.model_dump_json() + "\n")
                else:
                    handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


# ---------------------------------------------------------------- records of any format

RowProblem = Literal["json", "csv_cells", "csv", "not_rows"]
"""Why a row could not be read: a JSONL line that is not JSON, a CSV row with too many or too few
cells, CSV that cannot be parsed from here on, a JSON file that holds no list of rows."""


@dataclass(frozen=True)
class SourceRow:
    """One row as read. ``where`` says where it came from (``in.jsonl:3``, ``in.json[2]``, ``ds[5]``).

    A readable row has ``problem=None`` and its parsed ``data`` (a ``dict`` for
    CSV, Parquet and ``datasets``; any JSON value for JSON files, so checking
    for an object stays the caller's). An unreadable one has a ``problem``,
    a ``message`` for people, the ``raw`` text where there is one, and for a
    CSV row with the wrong number of cells the cells it had as ``data``.
    """

    where: str
    data: Any = None
    problem: RowProblem | None = None
    message: str | None = None
    raw: str | None = None


class RecordSource:
    """Rows of a local file, a directory, or a Hugging Face Hub dataset id, re-iterable and streamed.

    - a file is read by its suffix: ``.jsonl``, ``.json`` (a list of rows, an
      object holding one list of rows, or one object as one row; a ``.json``
      file that is not one JSON document is read as JSON lines), ``.csv``,
      ``.parquet`` (needs pyarrow), each but Parquet also gzipped;
    - a directory written by ``Dataset.save_to_disk`` is loaded with
      ``datasets.load_from_disk`` (``split`` picks from a ``DatasetDict``);
      another directory holding data files is every such file inside, in name
      order; any other directory, and a name that is no local path but looks
      like ``owner/name``, go through ``datasets.load_dataset(source,
      split=split, **load_kwargs)``.

    Problems with the source itself raise at once: ``FileNotFoundError`` for a
    path that does not exist, ``ValueError`` for a file of another type. A
    loaded ``datasets`` object is kept, so iterating again does not reload it.
    """

    def __init__(self, source: str | Path, *, split: str = "train", **load_kwargs: Any) -> None:
        self.source = str(source)
        self.path = Path(source).expanduser()
        self.split = split
        self.load_kwargs = load_kwargs
        self._dataset: Any = None
        if not self.path.exists() and not (_HUB_ID.match(self.source) and not self.source.startswith(".")):
            raise FileNotFoundError(f"no such file, directory or Hub dataset id: {self.source}")
        if self.path.is_file() and data_suffix(self.path) is None:
            raise ValueError(
                f"unsupported file type {self.path.name!r}: use {', '.join(DATA_SUFFIXES)} (optionally gzipped)"
            )

    @property
    def name(self) -> str:
        """The file or directory name, or the Hub id."""
        return self.path.name if self.path.exists() else self.source

    def __iter__(self) -> Iterator[SourceRow]:
        if self.path.is_file():
            yield from _file_rows(self.path)
            return
        if self.path.is_dir() and not _saved_dataset(self.path):
            files = sorted(p for p in self.path.rglob("*") if p.is_file() and data_suffix(p) is not None)
            if files:
                for file in files:
                    yield from _file_rows(file)
                return
        for index, data in enumerate(self._load_dataset()):
            yield SourceRow(f"{self.name}[{index}]", dict(data))

    def _load_dataset(self) -> Any:
        if self._dataset is not None:
            return self._dataset
        try:
            import datasets
        except ImportError as exc:
            raise RuntimeError(f"reading {self.source} needs the `datasets` package: pip install datasets") from exc
        if _saved_dataset(self.path):
            loaded = datasets.load_from_disk(str(self.path))
            if isinstance(loaded, datasets.DatasetDict):
                if self.split not in loaded:
                    raise ValueError(f"{self.source} has no split {self.split!r} (has {', '.join(loaded)})")
                loaded = loaded[self.split]
        else:
            target = str(self.path) if self.path.is_dir() else self.source
            logger.info("loading %s (split %s) with datasets.load_dataset", target, self.split)
            loaded = datasets.load_dataset(target, split=self.split, **self.load_kwargs)
        self._dataset = loaded
        return loaded


def data_suffix(path: Path) -> str | None:
    """The data type a file's name says (``.jsonl.gz`` → ``.jsonl``), or ``None`` for another file."""
    name = path.name.lower().removesuffix(".gz")
    return next((s for s in DATA_SUFFIXES if name.endswith(s)), None)


def _saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS)


def _file_rows(path: Path) -> Iterator[SourceRow]:
    suffix = data_suffix(path)
    if suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise ValueError(f"unsupported file type {path.name!r}: use {', '.join(DATA_SUFFIXES)} (optionally gzipped)")


def _jsonl_rows(path: Path) -> Iterator[SourceRow]:
    with open_text(path, errors="replace") as handle:
        for number, line in _lines(path, handle):
            where = f"{path.name}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield SourceRow(where, problem="json", message=f"not valid JSON ({exc.msg})", raw=line.rstrip("\n"))
            else:
                yield SourceRow(where, data)


def _json_rows(path: Path) -> Iterator[SourceRow]:
    with open_text(path, errors="replace") as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        logger.info("%s is not one JSON document; reading it as JSON lines", path)
        yield from _jsonl_rows(path)
        return
    if isinstance(data, dict):
        # {"data": [...]} / {"train": [...]} holds the rows; any other object is one row.
        only = next(iter(data.values())) if len(data) == 1 else None
        data = only if isinstance(only, list) else [data]
    if not isinstance(data, list):
        message = "expected a JSON list of rows"
        yield SourceRow(path.name, problem="not_rows", message=message, raw=text[:200])
        return
    for index, item in enumerate(data):
        yield SourceRow(f"{path.name}[{index}]", item)


def _csv_rows(path: Path) -> Iterator[SourceRow]:
    csv.field_size_limit(1 << 30)  # Do-Not-Answer responses exceed the 128 KiB default in places
    with open_text(path, errors="replace") as handle:
        reader = csv.DictReader(handle)
        try:
            for row in reader:
                where = f"{path.name}:{reader.line_num}"
                # DictReader files surplus cells under None and fills missing ones with None.
                if None in row or any(v is None for v in row.values()):
                    cells = {k: v for k, v in row.items() if k is not None}
                    yield SourceRow(where, cells, problem="csv_cells", message="wrong number of CSV cells")
                else:
                    yield SourceRow(where, dict(row))
        except csv.Error as exc:
            where = f"{path.name}:{reader.line_num}"
            yield SourceRow(where, problem="csv", message=f"not valid CSV from here on ({exc})", raw=str(exc))


def _parquet_rows(path: Path) -> Iterator[SourceRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise RuntimeError(f"reading {path} needs pyarrow: pip install pyarrow") from exc
    index = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for data in batch.to_pylist():
            yield SourceRow(f"{path.name}[{index}]", data)
            index += 1
