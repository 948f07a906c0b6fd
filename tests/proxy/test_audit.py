"""The audit log: its store (schema, WAL, retention, reads), its writer (off the request path, drops counted),
the proxy's one row per checked answer, and ``aligner-proxy audit``."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from aligner_proxy.cli import app as cli
from aligner_proxy.core.audit import (
    AuditRecord,
    AuditStore,
    AuditStoreError,
    Retention,
    load_redactor,
    redact_secrets,
)
from aligner_proxy.server.audit import AuditWriter
from aligner_proxy.server.metrics import Metrics
from tests.proxy.fakes import BENIGN_ANSWER, CORRECTION, HARMFUL_ANSWER
from tests.proxy.helpers import MODEL, running_proxy


def record(status: str = "passed", question: str = "q", when: float | None = None, **fields: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "time": time.time() if when is None else when,
        "request_id": "req-1",
        "endpoint": "/v1/chat/completions",
        "model": "m",
        "mode": "gated",
        "status": status,
        "question": question,
        "original": "the original",
        "final": "the final",
    }
    return AuditRecord(**{**base, **fields})


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# -- the store


def test_store_is_wal_keeps_rows_and_reads_them_back_newest_first(tmp_path: Path) -> None:
    store = AuditStore.open(tmp_path / "audit.sqlite")
    store.insert([record("passed", "a"), record("flagged", "b"), record("blocked", "b")])
    assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reader = AuditStore.open_readonly(tmp_path / "audit.sqlite")
    assert [r.question for r in reader.recent()] == ["b", "b", "a"]
    assert [r.status for r in reader.recent(status="flagged")] == ["flagged"]
    assert [r.id for r in reader.iter_all()] == [1, 2, 3]
    summary = reader.summary()
    assert summary.rows == 3 and summary.by_status == {"passed": 1, "flagged": 1, "blocked": 1}
    assert summary.top_flagged == [("b", 2)]
    assert reader.integrity() == "ok"


def test_retention_deletes_rows_past_their_age_and_beyond_the_row_limit(tmp_path: Path) -> None:
    store = AuditStore.open(tmp_path / "audit.sqlite")
    now = 1_000_000.0
    store.insert([record(question=f"old{i}", when=now - 3 * 86400) for i in range(3)])
    store.insert([record(question=f"new{i}", when=now - 60) for i in range(5)])
    assert store.prune(Retention(max_age_days=1), now=now) == 3
    assert store.prune(Retention(max_rows=2), now=now) == 3
    assert [r.question for r in store.recent()] == ["new4", "new3"]


def test_reading_a_missing_or_foreign_file_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(AuditStoreError, match="no such file"):
        AuditStore.open_readonly(tmp_path / "missing.sqlite")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(AuditStoreError, match="not an SQLite database"):
        AuditStore.open_readonly(garbage)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(AuditStoreError, match="not an audit log"):
        AuditStore.open_readonly(other)


def test_redaction_hooks_load_by_dotted_path_and_scrub_keys() -> None:
    hook = load_redactor("aligner_proxy.core.audit:redact_secrets")
    assert hook is redact_secrets
    scrubbed = hook(record(question="my key is sk-abcdef0123456789, help"))
    assert scrubbed is not None and "sk-abcdef" not in scrubbed.question
    with pytest.raises(ValueError, match="cannot be loaded"):
        load_redactor("aligner_proxy.core.audit:no_such_hook")


# -- the writer


class SlowStore(AuditStore):
    """A store whose writes wait on ``gate``: a disk that stalls."""

    def __init__(self, path: Path) -> None:
        opened = AuditStore.open(path)
        super().__init__(opened.connection, opened.path)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def insert(self, records: Any) -> None:
        self.entered.set()
        self.gate.wait(10)
        super().insert(records)


def test_a_stalled_disk_never_blocks_submit_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    store = SlowStore(tmp_path / "audit.sqlite")
    writer = AuditWriter(store, metrics, queue_size=3, retention=Retention(), batch_size=1)
    writer.start()
    writer.submit(record(question="first"))  # taken by the writer, which then stalls on the disk
    assert store.entered.wait(5)
    submitting = threading.Thread(target=lambda: [writer.submit(record(question=f"q{i}")) for i in range(10)])
    submitting.start()
    submitting.join(5)
    # Ten submits returned while the writer is still stuck in the disk: put_nowait only, never a wait.
    assert not submitting.is_alive() and not store.gate.is_set()
    text = metrics.render().decode()
    assert metric(text, 'aligner_audit_rows_dropped_total{reason="queue_full"}') == 7
    assert metric(text, "aligner_audit_rows_queued") == 3
    store.gate.set()
    writer.close()
    rows = AuditStore.open_readonly(tmp_path / "audit.sqlite").recent()
    assert [r.question for r in rows] == ["q2", "q1", "q0", "first"]
    assert metric(metrics.render().decode(), "aligner_audit_rows_written_total") == 4


def test_the_redaction_hook_runs_before_storing_and_may_skip_a_row(tmp_path: Path) -> None:
    metrics = Metrics()

    def hook(row: AuditRecord) -> AuditRecord | None:
        return None if "skip" in row.question else row.model_copy(update={"question": "[hidden]"})

    writer = AuditWriter(
        AuditStore.open(tmp_path / "audit.sqlite"), metrics, queue_size=10, retention=Retention(), redactor=hook
    )
    writer.start()
    writer.submit(record(question="secret question"))
    writer.submit(record(question="skip me"))
    writer.close()
    assert [r.question for r in AuditStore.open_readonly(tmp_path / "audit.sqlite").recent()] == ["[hidden]"]
    assert metric(metrics.render().decode(), 'aligner_audit_rows_dropped_total{reason="redacted"}') == 1


# -- the proxy: one row per checked answer


def test_the_proxy_writes_one_row_per_checked_answer_whole_and_streamed(upstream_url: str, tmp_path: Path) -> None:
    log = tmp_path / "audit.sqlite"
    with running_proxy(upstream_url, audit_log=log) as url:
        bomb = {"model": MODEL, "messages": [{"role": "user", "content": "How do I make a <b>bomb</b>?"}]}
        whole = httpx.post(url + "/v1/chat/completions", json=bomb, headers={"x-request-id": "req-whole"})
        bread = {"model": MODEL, "messages": [{"role": "user", "content": "Bread?"}], "stream": True, "n": 2}
        streamed = httpx.post(url + "/v1/chat/completions", json=bread, headers={"x-request-id": "req-stream"})
        prompt = {"model": MODEL, "prompt": "Tell me about bread", "aligner": {"mode": "off"}}
        completion = httpx.post(url + "/v1/completions", json=prompt, headers={"x-request-id": "req-cmpl"})
        assert whole.status_code == streamed.status_code == completion.status_code == 200
        wait_for(lambda: metric(httpx.get(url + "/metrics").text, "aligner_audit_rows_written_total") == 4)
    rows = {(r.request_id, r.choice): r for r in AuditStore.open_readonly(log).recent()}
    assert set(rows) == {("req-whole", 0), ("req-stream", 0), ("req-stream", 1), ("req-cmpl", 0)}
    fixed = rows["req-whole", 0]
    assert (fixed.status, fixed.endpoint, fixed.model) == ("modified", "/v1/chat/completions", MODEL)
    assert fixed.question == "How do I make a <b>bomb</b>?"
    assert (fixed.original, fixed.final) == (HARMFUL_ANSWER, CORRECTION)
    assert fixed.cost_before == 4.0 and fixed.cost_after == -4.0 and fixed.total_ms > 0
    assert fixed.final == whole.json()["choices"][0]["message"]["content"]
    assert rows["req-stream", 1].status == "passed" and rows["req-stream", 1].final.strip() == BENIGN_ANSWER
    assert (rows["req-cmpl", 0].endpoint, rows["req-cmpl", 0].status) == ("/v1/completions", "skipped")


def test_without_the_setting_no_log_is_written(upstream_url: str, tmp_path: Path) -> None:
    with running_proxy(upstream_url) as url:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Bread?"}]}
        assert httpx.post(url + "/v1/chat/completions", json=body).status_code == 200
        assert metric(httpx.get(url + "/metrics").text, "aligner_audit_rows_written_total") == 0
    assert list(tmp_path.iterdir()) == []


# -- aligner-proxy audit


def test_cli_summarises_and_exports(tmp_path: Path) -> None:
    log = tmp_path / "audit.sqlite"
    store = AuditStore.open(log)
    store.insert([record("passed", "bread?"), record("blocked", "bomb?"), record("modified", "bomb?")])
    store.close()
    out = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(cli, ["audit", str(log), "--export", str(out), "--status", "blocked"])
    assert result.exit_code == 0, result.output
    assert "3 rows" in result.output and "blocked" in result.output
    assert "bomb?" in result.output.split("top flagged questions")[1]
    assert "bread?" not in result.output.split("top flagged questions")[1]
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["status"], r["question"]) for r in exported] == [("blocked", "bomb?")]


def test_cli_says_what_is_wrong_with_a_missing_or_corrupt_file(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["audit", str(tmp_path / "nope.sqlite")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"\0garbage" * 512)
    result = CliRunner().invoke(cli, ["audit", str(corrupt)])
    assert result.exit_code == 2 and "not an SQLite database" in result.output
    assert "Traceback" not in result.output
