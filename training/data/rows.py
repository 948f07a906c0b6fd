"""Reading the rows of a public data file, and counting the rows that cannot be used.

A source is a local file (JSONL, JSON, CSV, any of them gzipped, or Parquet
when pyarrow is installed), a directory of them, a ``save_to_disk`` dataset, or
a Hub dataset id loaded through ``datasets`` for users who are online;
:mod:`aligner_proxy.core.files` reads them. Each row comes out as a dict; a
line that does not parse is counted in the :class:`LoadReport` under a reason,
with a few examples kept, and reading goes on: a corpus build should never die
on row 3,117, and never lose rows without saying so. The loaders in
:mod:`training.data.loaders` turn the rows into records and count their own
:class:`BadRow` reasons in the same report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aligner_proxy.core.files import RecordSource, RowProblem

MAX_EXAMPLES_PER_REASON = 3


class BadRow(Exception):
    """A row that cannot become a record; ``reason`` is the counter key in the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LoadReport:
    """What one load saw: rows read, records made, and bad rows counted per reason.

    ``examples`` keeps the first :data:`MAX_EXAMPLES_PER_REASON` offending rows
    per reason (as short strings) so a data card can show what was dropped."""

    source: str
    rows: int = 0
    records: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add_bad(self, reason: str, row: object) -> None:
        self.bad[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES_PER_REASON:
            kept.append(_preview(row))

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "records": self.records,
            "bad": dict(sorted(self.bad.items())),
            "examples": self.examples,
        }


def _preview(row: object, limit: int = 200) -> str:
    text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


_PROBLEM_REASONS: Mapping[RowProblem, str] = {
    "json": "unparsable line",
    "csv_cells": "wrong number of csv cells",
    "csv": "unparsable csv",
    "not_rows": "not a list of objects",
}
"""The report's reason for each row :class:`~aligner_proxy.core.files.RecordSource` could not read."""


def read_rows(
    source: str | Path, report: LoadReport, *, split: str = "train", **hub_kwargs: Any
) -> Iterator[dict[str, Any]]:
    """Yield the rows of ``source`` as dicts, counting unreadable ones in ``report``.

    ``source`` is anything :class:`~aligner_proxy.core.files.RecordSource`
    reads: a file, a directory (every supported file inside, in name order, or
    a ``save_to_disk`` dataset), or, when no such path exists, a Hub dataset id
    loaded with ``datasets.load_dataset(source, split=split, **hub_kwargs)``.
    A path that looks like a path but does not exist raises
    ``FileNotFoundError``: that is a configuration error, not a bad row."""
    for row in RecordSource(source, split=split, **hub_kwargs):
        if row.problem is not None:
            report.rows += 1
            detail = row.where if row.problem == "csv_cells" else f"{row.where}: {(row.raw or '').strip()}"
            report.add_bad(_PROBLEM_REASONS[row.problem], detail)
        elif isinstance(row.data, dict):
            yield row.data
        else:
            report.rows += 1
            report.add_bad("row is not an object", f"{row.where}: {_preview(row.data)}")
