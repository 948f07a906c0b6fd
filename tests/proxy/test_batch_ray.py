"""`aligner-proxy correct --engine ray` on a local Ray instance with the tiny models.

The Ray engine must write what the local engine writes, row for row, and a
run killed with ``kill -9`` must finish on a re-run with no row lost or twice.
One Ray instance (2 CPUs) serves the module; the killed run joins it from a
subprocess, as a second driver on a cluster would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aligner_proxy.batch.shards import MANIFEST, ShardedOutput, read_manifest, read_shards
from aligner_proxy.batch.writer import OutputLockedError
from aligner_proxy.cli import app

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the ray engine needs Ray Data: pip install 'aligner-proxy[ray]'"
)

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    import ray
    import ray.data  # its log handler binds the stderr of its import: here, not inside a CliRunner

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def model_args(tiny_lm_dir: Path, tiny_classifier_dir: Path, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    args = ["--corrector", str(tiny_lm_dir), "--scorer", str(tiny_classifier_dir), "--id-field", "id"]
    return args, {"ALIGNER_CACHE_DIR": str(tmp_path), "ALIGNER_CORRECTOR_MAX_NEW_TOKENS": "6"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def correct(source: Path, out: Path, model: tuple[list[str], dict[str, str]], *extra: str) -> str:
    args, env = model
    result = runner.invoke(app, ["correct", "--in", str(source), "--out", str(out), *args, *extra], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def local_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ray_engine_writes_the_local_engines_rows(
    ray_address: str, model_args: tuple[list[str], dict[str, str]], tmp_path: Path
) -> None:
    rows: list[dict[str, Any]] = [{"id": i, "question": f"question {i}?", "answer": f"answer {i}."} for i in range(11)]
    rows += [{"id": 11, "question": "no answer"}, rows[3]]  # a row that fails before the model, a repeated id
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    local = tmp_path / "local.jsonl"
    correct(source, local, model_args, "--batch-size", "2")
    shards = tmp_path / "shards"
    ray_args = ("--engine", "ray", "--num-actors", "2", "--shard-rows", "4", "--batch-size", "2")
    output = correct(source, shards, model_args, *ray_args)

    expected = local_records(local)
    assert len(expected) == 12 and expected[-1]["status"] == "failed"
    assert list(read_shards(shards)) == expected  # same rows, same order, same corrections and costs
    assert "done 11, skipped 0, failed 1, duplicate ids 1" in output
    manifest = read_manifest(shards)
    assert {int(k): v["rows"] for k, v in manifest["shards"].items()} == {0: 4, 1: 4, 2: 4}
    assert manifest["shards"]["2"]["failed"] == 1

    parquet = tmp_path / "all.parquet"
    assert "done 0, skipped 12, failed 0" in correct(
        source, shards, model_args, *ray_args, "--parquet-out", str(parquet)
    )
    import pyarrow.parquet as pq

    assert pq.read_table(parquet).column("row_id").to_pylist() == [r["row_id"] for r in expected]
    with ShardedOutput(shards, shard_rows=4), pytest.raises(OutputLockedError):
        ShardedOutput(shards, shard_rows=4).open()
    with pytest.raises(ValueError, match="--shard-rows 4"):
        ShardedOutput(shards, shard_rows=5).open()


def test_a_killed_ray_run_finishes_on_rerun_with_no_row_lost_or_twice(
    ray_address: str, model_args: tuple[list[str], dict[str, str]], tmp_path: Path
) -> None:
    rows = [{"id": f"r{i}", "question": f"How do I bake bread {i}?", "answer": f"Mix flour {i}."} for i in range(40)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    shards = tmp_path / "shards"
    ray_args = ["--engine", "ray", "--num-actors", "1", "--shard-rows", "2", "--batch-size", "1"]
    args, env = model_args
    command = [sys.executable, "-m", "aligner_proxy.cli", "correct", "--in", str(source), "--out", str(shards)]
    command += [*args, *ray_args, "--ray-address", ray_address, "--max-new-tokens", "24"]
    proc = subprocess.Popen(
        command, env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=REPO, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not ((shards / MANIFEST).is_file() and len(read_manifest(shards)["shards"]) >= 2):
            assert proc.poll() is None, "the ray run ended before it could be killed"
            assert time.monotonic() < deadline, "the ray run finished no shard"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # A kill between a shard's rename and the manifest's leaves a finished shard the next run takes back.
    finished = len(list(shards.glob("shard-*.jsonl")))
    assert 2 <= finished < 20, "the kill came after the run had finished"

    output = correct(source, shards, model_args, *ray_args, "--max-new-tokens", "24")
    assert f"done {40 - 2 * finished}, skipped {2 * finished}, failed 0" in output  # finished shards are not redone
    assert not [p.name for p in shards.iterdir() if ".tmp-" in p.name]

    local = tmp_path / "local.jsonl"
    correct(source, local, model_args, "--batch-size", "1", "--max-new-tokens", "24")
    resumed = list(read_shards(shards))
    assert [r["row_id"] for r in resumed] == [r["id"] for r in rows]  # none lost, none twice, in input order
    assert resumed == local_records(local)
