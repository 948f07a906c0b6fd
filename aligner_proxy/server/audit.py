"""The audit log's writer: rows go into a bounded queue on the request path and reach SQLite from a thread.

A request only ever does ``put_nowait``: a slow or stuck disk fills the queue,
and then rows are *dropped* and counted (``aligner_audit_rows_dropped_total``
with ``reason="queue_full"``), never waited for. The writer thread takes what
is queued in batches, applies the redaction hook, and inserts each batch in
one transaction (:class:`~aligner_proxy.core.audit.AuditStore`), pruning by
age and row count now and then. This is the shape of the standard library's
``logging.handlers.QueueListener``; it is written out here because a log
record handler writes one record at a time, and batching is what keeps
SQLite's per-transaction cost off a busy proxy.

What a ``kill -9`` can take: the rows still in the queue and the batch being
written (its transaction never commits, so it leaves no partial row).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from typing import Protocol

from aligner_proxy.core.audit import AuditRecord, AuditStore, Redactor, Retention, load_redactor
from aligner_proxy.server.metrics import Metrics
from aligner_proxy.server.settings import Settings

logger = logging.getLogger(__name__)


class AuditSink(Protocol):
    """Where the annotator sends one record per checked answer; must never block."""

    def submit(self, record: AuditRecord) -> None: ...


class AuditWriter:
    """A bounded queue of records and the one thread that stores them. :meth:`open` and :meth:`close`
    block (disk I/O): the app calls them from a worker thread in its lifespan."""

    def __init__(
        self,
        store: AuditStore,
        metrics: Metrics,
        *,
        queue_size: int,
        retention: Retention,
        redactor: Redactor | None = None,
        batch_size: int = 256,
        prune_every_s: float = 60.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.retention = retention
        self.redactor = redactor
        self.batch_size = batch_size
        self.prune_every_s = prune_every_s
        self._queue: queue.Queue[AuditRecord] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        metrics.audit_queued.set_function(self._queue.qsize)

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics) -> AuditWriter:
        """The writer the settings ask for, its log opened and pruned once, its thread started."""
        assert settings.audit_log is not None
        redactor = load_redactor(settings.audit_redact) if settings.audit_redact else None
        store = AuditStore.open(settings.audit_log)
        retention = Retention(max_age_days=settings.audit_retention_days, max_rows=settings.audit_max_rows)
        writer = cls(store, metrics, queue_size=settings.audit_queue_size, retention=retention, redactor=redactor)
        writer._prune()
        writer.start()
        logger.info("audit log: %s (queue of %d rows)", settings.audit_log, settings.audit_queue_size)
        return writer

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def submit(self, record: AuditRecord) -> None:
        """Queue ``record``; if the queue is full (or the writer closed), drop it and count it."""
        if self._stop.is_set():
            self.metrics.audit_dropped.labels(reason="closed").inc()
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.metrics.audit_dropped.labels(reason="queue_full").inc()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout_s``), stop the thread; rows left are counted lost."""
        self._stop.set()
        self._thread.join(timeout_s)
        left = self._queue.qsize()
        if left:
            logger.warning("audit log: %d queued rows not written at shutdown", left)
            self.metrics.audit_lost.labels(reason="shutdown").inc(left)
        if not self._thread.is_alive():
            self.store.close()

    # -- the writer thread

    def _run(self) -> None:
        next_prune = time.monotonic() + self.prune_every_s
        while True:
            batch = self._take()
            if batch:
                self._write(batch)
            elif self._stop.is_set():
                return
            if time.monotonic() >= next_prune:
                self._prune()
                next_prune = time.monotonic() + self.prune_every_s

    def _take(self) -> list[AuditRecord]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[AuditRecord]) -> None:
        kept = []
        for record in batch:
            redacted = self._redact(record)
            if redacted is not None:
                kept.append(redacted)
        if not kept:
            return
        try:
            self.store.insert(kept)
        except sqlite3.Error:
            logger.exception("audit log: writing %d rows failed", len(kept))
            self.metrics.audit_lost.labels(reason="write_error").inc(len(kept))
            return
        self.metrics.audit_written.inc(len(kept))

    def _redact(self, record: AuditRecord) -> AuditRecord | None:
        if self.redactor is None:
            return record
        try:
            redacted = self.redactor(record)
        except Exception:  # a hook that fails must not let the unredacted row through
            logger.exception("audit log: the redaction hook failed; the row is dropped")
            self.metrics.audit_dropped.labels(reason="redaction_error").inc()
            return None
        if redacted is None:
            self.metrics.audit_dropped.labels(reason="redacted").inc()
        return redacted

    def _prune(self) -> None:
        if self.retention.max_age_days is None and self.retention.max_rows is None:
            return
        try:
            deleted = self.store.prune(self.retention)
        except sqlite3.Error:
            logger.exception("audit log: pruning failed")
            return
        if deleted:
            logger.info("audit log: %d rows past retention deleted", deleted)
