"""The resumable batch loop: skip what is done, work in batches, isolate failures, write in order.

It knows nothing of correction: a :class:`BatchJob` turns rows into output
fields (correcting answers, or — in the weak-to-strong script — answering
prompts). The loop does the rest, the same way for every job:

1. read the source once to find the rows not yet in the output (by id), so the
   progress bar's total and ETA are about the work left;
2. read it again and hand those rows to the job in batches, up to
   ``concurrency`` batches in flight;
3. write each finished batch in input order, one atomic append per batch
   (:class:`~aligner_proxy.batch.writer.ResumableWriter`);
4. when a batch raises, redo its rows one by one so a single bad row (too long,
   rejected by the backend) becomes one error row and the rest still get done.

A row that cannot be read, or that the job's ``prepare`` rejects, is written as
an error row without any model call. Output order follows input order, so a
run with ``concurrency=1`` over the same input is byte-for-byte reproducible
under greedy decoding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aligner_proxy.batch.readers import InputRow, RowError, RowSource
from aligner_proxy.core.errors import AlignmentError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Produced:
    """What a job made of one row: the fields added to it, and the tokens generated (for tokens/s)."""

    fields: dict[str, Any]
    tokens: int = 0


class BatchJob(Protocol[T]):
    """The work done on rows. ``run`` returns one :class:`Produced` per item, in order."""

    def prepare(self, row: InputRow) -> T:
        """Turn a row into a work item; raise :class:`RowError` for a row that cannot be processed."""
        ...

    async def run(self, items: list[T]) -> list[Produced]: ...

    def failed(self, error: str) -> dict[str, Any]:
        """The fields of an error row (``error`` set, the job's other fields null)."""
        ...


class RecordSink(Protocol):
    """Where finished records go: :class:`~aligner_proxy.batch.writer.ResumableWriter` or :class:`RecordList`.

    ``done`` maps the ids already there to whether they failed; the loop skips them.
    """

    @property
    def done(self) -> Mapping[str, bool]: ...

    def append(self, records: Sequence[Mapping[str, Any]]) -> None: ...


class RecordList:
    """Records kept in memory, in the order written: a shard of the Ray engine, whose file its driver writes."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.done: dict[str, bool] = {}

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        for record in records:
            self.records.append(dict(record))
            self.done[str(record["row_id"])] = record.get("error") is not None


class RowsSource:
    """Rows already read (ids, positions and errors set): a shard handed to a worker."""

    def __init__(self, rows: Sequence[InputRow], name: str) -> None:
        self._rows = list(rows)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def rows(self) -> Iterator[InputRow]:
        return iter(self._rows)


@dataclass
class RunStats:
    """Counts for the progress bar and the final summary.

    ``total`` is the rows this run has to do; ``skipped`` were already in the
    output; ``duplicates`` are input rows whose id appeared earlier in the input.
    """

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def processed(self) -> int:
        return self.done + self.failed

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def as_dict(self) -> dict[str, float]:
        return {
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "tokens": self.tokens,
            "seconds": round(self.elapsed_s, 3),
        }


ProgressFn = Callable[[RunStats], None]


async def run_resumable(
    source: RowSource,
    job: BatchJob[T],
    writer: RecordSink,
    *,
    batch_size: int = 8,
    concurrency: int = 1,
    limit: int | None = None,
    progress: ProgressFn | None = None,
) -> RunStats:
    """Process every row of ``source`` whose id is not yet in ``writer`` and append the results.

    ``writer`` must be open (a :class:`RecordList` keeps the records in
    memory). ``limit`` restricts the run to the first rows of the input (done
    or not), so re-running with the same limit finishes the same slice.
    ``progress`` is called once the work left is known and after every
    written batch.
    """
    if batch_size < 1 or concurrency < 1:
        raise ValueError("batch_size and concurrency must be >= 1")
    stats = RunStats()
    seen: set[str] = set()
    for row in _limited(source.rows(), limit):
        if row.id in seen:
            stats.duplicates += 1
        elif row.id in writer.done:
            stats.skipped += 1
        else:
            stats.total += 1
        seen.add(row.id)
    if stats.duplicates:
        logger.warning("%s: %d rows repeat an earlier row's id and are skipped", source.name, stats.duplicates)
    logger.info("%s: %d rows to do, %d already done", source.name, stats.total, stats.skipped)
    stats.started = time.perf_counter()
    if progress:
        progress(stats)

    pending: deque[asyncio.Task[list[dict[str, Any]]]] = deque()

    async def drain(keep: int) -> None:
        while len(pending) > keep:
            records = await pending.popleft()
            writer.append(records)
            stats.done += sum(1 for r in records if r.get("error") is None)
            stats.failed += sum(1 for r in records if r.get("error") is not None)
            if progress:
                progress(stats)

    def count_tokens(n: int) -> None:
        stats.tokens += n

    rows: list[InputRow] = []
    items: list[T] = []

    def submit_batch() -> None:
        nonlocal rows, items
        if rows:
            pending.append(asyncio.ensure_future(_work(job, rows, items, count_tokens)))
            rows, items = [], []

    started: set[str] = set()
    try:
        for row in _limited(source.rows(), limit):
            if row.id in writer.done or row.id in started:
                continue
            started.add(row.id)
            error = row.error
            if error is None:
                try:
                    items.append(job.prepare(row))
                    rows.append(row)
                except RowError as exc:
                    error = str(exc)
            if error is not None:
                logger.info("%s: row failed before any model call: %s", row.where, error)
                submit_batch()  # keep output in input order: the batch being built goes first
                pending.append(asyncio.ensure_future(_ready([_record(job, row, error)])))
                await drain(concurrency)
            elif len(rows) >= batch_size:
                submit_batch()
                await drain(concurrency - 1)
        submit_batch()
        await drain(0)
    finally:
        for task in pending:
            task.cancel()
    return stats


async def _ready(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records


async def _work(
    job: BatchJob[T], rows: list[InputRow], items: list[T], count_tokens: Callable[[int], None]
) -> list[dict[str, Any]]:
    """Run one batch; on failure, run its rows one at a time and turn those that still fail into error rows."""
    try:
        produced = await _checked(job.run(items), len(items))
    except Exception as exc:  # any backend failure: isolate the row(s) responsible, never end the run
        if len(items) == 1:
            logger.warning("%s: row failed: %s", rows[0].where, _describe(exc), exc_info=exc)
            return [_record(job, rows[0], _describe(exc))]
        logger.warning("a batch of %d rows failed (%s); retrying them one by one", len(items), _describe(exc))
        records: list[dict[str, Any]] = []
        for row, item in zip(rows, items, strict=True):
            records.extend(await _work(job, [row], [item], count_tokens))
        return records
    count_tokens(sum(p.tokens for p in produced))
    return [_merge(row, p.fields) for row, p in zip(rows, produced, strict=True)]


async def _checked(work: Awaitable[list[Produced]], n: int) -> list[Produced]:
    produced = await work
    if len(produced) != n:
        raise RuntimeError(f"job returned {len(produced)} results for {n} rows")
    return produced


def _describe(exc: BaseException) -> str:
    """A failed row's error: the operator's own record, so a fail-closed alignment error gives its detail."""
    detail = exc.detail if isinstance(exc, AlignmentError) else None
    if detail:
        return f"{type(exc).__name__}: {exc} ({detail})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _record(job: BatchJob[Any], row: InputRow, error: str) -> dict[str, Any]:
    fields = job.failed(error)
    fields["error"] = error
    if not row.data:  # an unreadable row: say where it was, since none of its fields survive
        fields["input_location"] = row.where
    return _merge(row, fields)


def _merge(row: InputRow, fields: dict[str, Any]) -> dict[str, Any]:
    """The output record: the input row's fields, then the job's (which win), then the row id."""
    return {**row.data, **fields, "row_id": row.id}


def _limited(rows: Iterator[InputRow], limit: int | None) -> Iterator[InputRow]:
    for row in rows:
        if limit is not None and row.index >= limit:
            return
        yield row
