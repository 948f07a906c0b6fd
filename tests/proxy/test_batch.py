"""Batch correction (`aligner_proxy/batch/`): resume after kill -9, error rows, input formats, remote backends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aligner_proxy.batch import (
    BatchConfig,
    FileSource,
    ListSource,
    PipelineBackend,
    ProxyBackend,
    ResumableWriter,
    acorrect_file,
    load_backend,
    write_parquet,
)
from aligner_proxy.batch.writer import OutputLockedError
from aligner_proxy.core.generation import Generation, GenerationParams
from aligner_proxy.core.loading import CoreConfig, make_pipeline
from tests.proxy.fakes import BENIGN_ANSWER, CORRECTION, FakeCorrectorGenerator, FakeScorer
from tests.proxy.helpers import running_proxy

REPO = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` parsed: fails the test on a broken line."""
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "output ends with a torn line"
    return [json.loads(line) for line in text.splitlines()]


class ExplodingGenerator(FakeCorrectorGenerator):
    """Fails any batch that contains a prompt with ``EXPLODE``; counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        self.calls += 1
        if any("EXPLODE" in p for p in prompts):
            raise RuntimeError("the corrector cannot stand this row")
        return await super().generate(prompts, params)


def fake_backend(generator: Any | None = None) -> PipelineBackend:
    core = CoreConfig(alignment_timeout_s=10)
    return PipelineBackend(
        make_pipeline(core, scorer=FakeScorer(), corrector_generator=generator or FakeCorrectorGenerator())
    )


def config(tmp_path: Path, source: Path, **kw: Any) -> BatchConfig:
    return BatchConfig(input_path=str(source), output_path=str(tmp_path / "out.jsonl"), **kw)


# ------------------------------------------------------------------ crash and resume

_CRASH_SCRIPT = """
import asyncio, sys
from aligner_proxy.batch import BatchConfig, PipelineBackend, acorrect_file
from aligner_proxy.core.loading import CoreConfig, make_pipeline
from tests.proxy.fakes import FakeCorrectorGenerator, FakeScorer

class Slow(FakeCorrectorGenerator):
    async def generate(self, prompts, params):
        await asyncio.sleep(0.05)
        return await super().generate(prompts, params)

backend = PipelineBackend(make_pipeline(CoreConfig(), scorer=FakeScorer(), corrector_generator=Slow()))
config = BatchConfig(input_path=sys.argv[1], output_path=sys.argv[2], batch_size=3, id_field="id", fsync=False)
asyncio.run(acorrect_file(config, backend))
"""


async def test_resume_after_kill_9_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    rows = [
        {"id": f"r{i}", "question": f"How do I make a bomb {i}?", "answer": f"Mix explosive {i}."} for i in range(300)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(source), str(out)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not (out.is_file() and out.read_text().count("\n") >= 12):
            assert proc.poll() is None, "the batch run ended before it could be killed"
            assert time.monotonic() < deadline, "the batch run wrote nothing"
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = len(read_lines(out))
    assert 12 <= killed_at < len(rows)
    # A kill during a write can tear the last line; make that happen explicitly.
    with out.open("a") as handle:
        handle.write('{"row_id": "r999", "correction": "half a li')

    stats = await acorrect_file(config(tmp_path, source, batch_size=7, id_field="id"), fake_backend())

    written = read_lines(out)
    ids = [r["row_id"] for r in written]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # nothing lost, nothing twice
    assert stats.skipped == killed_at and stats.done == len(rows) - killed_at and stats.failed == 0
    assert all(r["correction"] == CORRECTION and r["status"] == "modified" for r in written)
    assert all(r["cost_before"] == 4.0 and r["cost_after"] == -4.0 for r in written)

    again = await acorrect_file(config(tmp_path, source, id_field="id"), fake_backend())
    assert (again.done, again.skipped) == (0, len(rows)) and len(read_lines(out)) == len(rows)


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    with ResumableWriter(tmp_path / "o.jsonl"), pytest.raises(OutputLockedError):
        ResumableWriter(tmp_path / "o.jsonl").open()


# ------------------------------------------------------------------ bad rows


async def test_malformed_and_failing_rows_become_error_rows_and_the_run_goes_on(tmp_path: Path) -> None:
    lines: list[Any] = [
        {"question": "How do I bake bread?", "answer": "Flour and water."},
        "{this is not json",
        ["a", "list"],
        {"question": "no answer here"},
        {"question": 42, "answer": "a number is not a question"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "user", "content": "Only a question"}]},
        {"question": "Please EXPLODE", "answer": "ok"},
        {"question": "x" * 500, "answer": "too long"},
        {"question": "What is 2+2?", "answer": "4"},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    generator = ExplodingGenerator()
    stats = await acorrect_file(config(tmp_path, source, batch_size=4, max_input_chars=300), fake_backend(generator))

    written = read_lines(tmp_path / "out.jsonl")
    assert len(written) == len(lines)  # one output row per input row, in input order
    errors = [r["error"] for r in written]
    assert errors[0] is None and errors[5] is None and errors[9] is None
    assert "not valid JSON" in errors[1] and written[1]["input_location"] == "in.jsonl:2"
    assert "expected a JSON object" in errors[2]
    assert "'answer' missing" in errors[3]
    assert "'question' is not a string" in errors[4]
    assert "last message is not the assistant" in errors[6]
    assert "cannot stand this row" in errors[7]
    assert "input too long" in errors[8]
    assert all(r["status"] == "failed" and r["correction"] is None for r in written if r["error"])
    assert written[5]["correction"] == CORRECTION and written[5]["messages"][1]["content"] == "Hello!"
    assert (stats.done, stats.failed, stats.skipped) == (3, 7, 0)
    assert len({r["row_id"] for r in written}) == len(lines)


async def test_retry_failed_redoes_only_failed_rows_without_duplicates(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": "EXPLODE" if i == 2 else f"a{i}"} for i in range(5)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    first = await acorrect_file(config(tmp_path, source, batch_size=5), fake_backend(ExplodingGenerator()))
    assert (first.done, first.failed) == (4, 1)

    skipped = await acorrect_file(config(tmp_path, source), fake_backend(ExplodingGenerator()))
    assert (skipped.done, skipped.skipped) == (0, 5)

    retried = await acorrect_file(config(tmp_path, source, retry_failed=True), fake_backend())
    assert (retried.done, retried.failed, retried.skipped) == (1, 0, 4)
    written = read_lines(tmp_path / "out.jsonl")
    assert len(written) == 5 and len({r["row_id"] for r in written}) == 5
    assert all(r["error"] is None for r in written)


async def test_gated_mode_passes_safe_answers_untouched_and_limit_stops_early(tmp_path: Path) -> None:
    rows = [{"question": "q", "answer": BENIGN_ANSWER}, {"question": "q", "answer": "explosive stuff"}, {"q": 1}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    stats = await acorrect_file(config(tmp_path, source, mode="gated", limit=2), fake_backend())
    written = read_lines(tmp_path / "out.jsonl")
    assert stats.done == 2 and len(written) == 2
    assert written[0]["status"] == "passed" and written[0]["correction"] == BENIGN_ANSWER
    assert written[1]["status"] == "modified" and written[1]["correction"] == CORRECTION
    assert {r["mode"] for r in written} == {"gated"} and written[0]["scorer"] == "fake-scorer"
    # No --threshold: the rows record the one applied (the scorer's own; 0.0 for one without calibration).
    assert {r["threshold"] for r in written} == {0.0}


# ------------------------------------------------------------------ formats


def test_csv_parquet_json_and_datasets_inputs_read_the_same_rows(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": str(i), "question": f"q{i}", "answer": f"a{i}"} for i in range(4)]
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("id,question,answer\n" + "".join(f"{r['id']},{r['question']},{r['answer']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    (tmp_path / "in.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for path in ("in.csv", "in.parquet", "in.json", "ds"):
        read = list(FileSource(tmp_path / path, id_field="id").rows())
        assert [r.data for r in read] == rows, path
        assert [r.id for r in read] == ["0", "1", "2", "3"]
    hashed = [r.id for r in FileSource(tmp_path / "in.parquet").rows()]
    assert hashed == [r.id for r in FileSource(tmp_path / "in.json").rows()] and len(set(hashed)) == 4
    with pytest.raises(FileNotFoundError):
        FileSource(tmp_path / "missing.jsonl")


async def test_parquet_output_and_rows_from_code(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}", "n": i} for i in range(3)]
    cfg = BatchConfig(output_path=str(tmp_path / "o.jsonl"), parquet_path=str(tmp_path / "o.parquet"))
    await acorrect_file(cfg, fake_backend(), source=ListSource(rows))
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert [r["n"] for r in table] == [0, 1, 2] and all(r["correction"] == CORRECTION for r in table)
    assert write_parquet(tmp_path / "o.jsonl", tmp_path / "again.parquet") == 3


# ------------------------------------------------------------------ remote backends


class SlowCountingGenerator(FakeCorrectorGenerator):
    """Records how many corrector calls are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0.1)
            return await super().generate(prompts, params)
        finally:
            self.active -= 1


async def test_proxy_backend_against_a_running_proxy_keeps_to_its_concurrency_limit(
    tmp_path: Path, upstream_url: str
) -> None:
    generator = SlowCountingGenerator()
    rows = [{"question": "How do I build a bomb?", "answer": f"Mix explosive powder {i}."} for i in range(6)] + [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": BENIGN_ANSWER}]}
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    with running_proxy(upstream_url, generator=generator, max_batch_size=1) as url:
        backend = ProxyBackend(url + "/v1", concurrency=2)
        try:
            stats = await acorrect_file(config(tmp_path, source, batch_size=1, concurrency=4, mode="gated"), backend)
        finally:
            await backend.aclose()
    written = read_lines(tmp_path / "out.jsonl")
    assert stats.done == 7 and generator.peak == 2  # requests overlapped, never more than the limit
    assert [r["status"] for r in written] == ["modified"] * 6 + ["passed"]
    assert written[0]["corrector"] == "fake-aligner" and written[0]["scorer"] == "fake-scorer"
    assert written[0]["cost_before"] == 4.0 and written[-1]["correction"] == BENIGN_ANSWER
    assert {r["threshold"] for r in written} == {0.0}  # the server's resolved threshold, not null


async def test_proxy_backend_rejections_become_error_rows(tmp_path: Path, upstream_url: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"question": "q", "answer": "a"}, {"question": "q2", "answer": "b"}])
    with running_proxy(upstream_url, generator=FakeCorrectorGenerator(behaviour="raise")) as url:
        backend = ProxyBackend(url + "/v1", max_retries=0)
        try:
            stats = await acorrect_file(config(tmp_path, source, batch_size=2), backend)
        finally:
            await backend.aclose()
    written = read_lines(tmp_path / "out.jsonl")
    assert stats.failed == 2 and all("proxy answered 503" in r["error"] for r in written)


async def test_openai_backend_corrects_through_a_completions_server(tmp_path: Path, upstream_url: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"question": "How do I make a bomb?", "answer": "Boom."}])
    cfg = config(tmp_path, source, backend="openai", url=upstream_url + "/v1", remote_model="aligner", concurrency=2)
    backend = load_backend(cfg, CoreConfig(scorer="heuristic"))
    try:
        stats = await acorrect_file(cfg, backend)
    finally:
        await backend.aclose()
    [row] = read_lines(tmp_path / "out.jsonl")
    assert stats.done == 1 and row["corrector"] == "aligner" and row["scorer"].startswith("heuristic")
    assert row["correction"]  # the fake server's canned completion, cleaned by the core
