"""The sharded output of the Ray engine (`aligner_proxy/batch/shards.py`), and how the engine cuts shards.

No Ray here: what a kill can leave behind (a temporary shard, a finished shard
the manifest misses) and what a re-run must then skip or redo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligner_proxy.batch import ListSource
from aligner_proxy.batch.ray_engine import cut_shards
from aligner_proxy.batch.runner import RunStats
from aligner_proxy.batch.shards import MANIFEST, ShardedOutput, ids_digest, read_shards, shard_name
from aligner_proxy.batch.writer import encode_records


def records(ids: list[str], failed: frozenset[str] = frozenset()) -> list[dict[str, object]]:
    return [{"row_id": i, "correction": f"c{i}", "error": "boom" if i in failed else None} for i in ids]


def commit(output: ShardedOutput, index: int, ids: list[str], failed: frozenset[str] = frozenset()) -> None:
    output.commit(
        index, encode_records(records(ids, failed)), rows=len(ids), failed=len(failed), digest=ids_digest(ids)
    )


def test_a_kill_between_the_shard_and_the_manifest_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ShardedOutput(out, shard_rows=2) as output:
        commit(output, 0, ["a", "b"])
    # What a kill can leave: a finished shard 1 not yet in the manifest, a half-written shard 2.
    (out / shard_name(1)).write_bytes(encode_records(records(["c", "d"], frozenset({"d"}))))
    (out / ".shard-00002.jsonl.tmp-123").write_text('{"row_id": "e", "correc')
    (out / ".manifest.json.tmp-123").write_text('{"version": 1, "sha')

    with ShardedOutput(out, shard_rows=2) as output:
        assert output.is_done(0, ids_digest(["a", "b"])) and output.is_done(1, ids_digest(["c", "d"]))
        assert not output.is_done(2, ids_digest(["e"]))
        assert not output.is_done(1, ids_digest(["c", "d"]), retry_failed=True)  # shard 1 has a failed row
        assert not output.is_done(0, ids_digest(["a", "x"]))  # the input changed there: redo, never mix
    assert not list(out.glob(".*.tmp-*"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["shards"]["1"] == {"rows": 2, "failed": 1, "ids": ids_digest(["c", "d"])}
    assert [r["row_id"] for r in read_shards(out)] == ["a", "b", "c", "d"]


def test_a_file_or_another_shard_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file.jsonl").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        ShardedOutput(tmp_path / "file.jsonl", shard_rows=2).open()
    with ShardedOutput(tmp_path / "out", shard_rows=2) as output:
        commit(output, 0, ["a", "b"])
    with pytest.raises(ValueError, match="--shard-rows 2"):
        ShardedOutput(tmp_path / "out", shard_rows=3).open()


def test_shards_are_cut_after_dropping_repeated_ids_and_stop_at_the_limit() -> None:
    rows = [{"id": i} for i in ["a", "b", "a", "c", "d", "e", "f"]]
    stats = RunStats()
    shards = list(cut_shards(ListSource(rows, id_field="id"), 2, limit=6, stats=stats))
    assert [[r.id for r in s.rows] for s in shards] == [["a", "b"], ["c", "d"], ["e"]]
    assert [s.index for s in shards] == [0, 1, 2] and stats.duplicates == 1
