"""A sharded batch output: one JSONL file per shard of input rows, and a manifest of the finished shards.

The Ray engine (:mod:`~aligner_proxy.batch.ray_engine`) writes here. Shard
``k`` holds the results of input rows ``k * shard_rows`` to
``(k + 1) * shard_rows - 1`` (after rows repeating an earlier id are dropped,
as the local engine drops them), in input order, each record exactly as the
local engine would write it. Reading the shards in order gives the local
engine's output file.

Layout of the output directory::

    manifest.json       which shards are finished: rows, failed rows, a digest of their ids
    shard-00000.jsonl   one per finished shard
    .lock               held (flock) for the whole run: a second run on the same output is refused

Guarantees, and how they are kept:

- **A shard file is whole or absent.** It is written under a temporary name,
  fsynced and renamed; a kill leaves at most a temporary file (of a shard or
  of the manifest), removed on the next open.
- **The manifest never lies.** It is rewritten atomically (temporary file +
  rename) after each shard file. A kill between the two renames leaves a
  finished shard the manifest does not list: the next open reads it back in.
- **No row twice, none lost.** A shard counts as done only if the ids it
  holds are the ids the input has at its position (``ids``: a digest of them
  in order), so a changed input gets those shards redone, never mixed; a
  re-run with another ``shard_rows`` is refused (the shards would overlap).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, Field

from aligner_proxy.batch.writer import OutputLockedError, open_locked, read_records, write_atomically

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_SHARD_FILE = re.compile(r"^shard-(\d{5,})\.jsonl$")


class ShardEntry(BaseModel):
    """One finished shard."""

    rows: int
    failed: int
    ids: str = Field(description="digest of the shard's row ids, in order (ids_digest)")


class Manifest(BaseModel):
    """``manifest.json``: what a re-run skips."""

    version: int = 1
    shard_rows: int
    mode: str | None = None
    threshold: float | None = None
    shards: dict[int, ShardEntry] = Field(default_factory=dict)


def ids_digest(ids: Sequence[str]) -> str:
    """A 16-hex-digit digest of row ids in order: what ties a shard file to its place in the input."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:16]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.jsonl"


class ShardedOutput:
    """The output directory of a sharded run. Use as a context manager, or :meth:`open` and :meth:`close`."""

    def __init__(self, path: str | Path, *, shard_rows: int, fsync: bool = True) -> None:
        self.path = Path(path)
        self.shard_rows = shard_rows
        self.fsync = fsync
        self.manifest = Manifest(shard_rows=shard_rows)
        self._lock: int | None = None

    def __enter__(self) -> ShardedOutput:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Lock the directory, read the manifest, take back finished shards it misses, drop temporary files."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} is a file; the ray engine writes a directory of shards")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = open_locked(self.path / ".lock")
        except OutputLockedError:
            raise OutputLockedError(f"{self.path} is being written by another run") from None
        manifest_path = self.path / MANIFEST
        if manifest_path.is_file():
            self.manifest = Manifest.model_validate_json(manifest_path.read_bytes())
            if self.manifest.shard_rows != self.shard_rows:
                self.close()
                raise ValueError(
                    f"{self.path} was written with shard_rows={self.manifest.shard_rows}; "
                    f"re-run with --shard-rows {self.manifest.shard_rows} to resume it"
                )
        for entry in self.path.iterdir():
            if entry.name.startswith(".") and ".tmp-" in entry.name:  # a shard or manifest a kill cut short
                entry.unlink()
                continue
            match = _SHARD_FILE.match(entry.name)
            if match and int(match.group(1)) not in self.manifest.shards:
                self._recover(int(match.group(1)), entry)

    def _recover(self, index: int, path: Path) -> None:
        records = read_records(path)
        ids = [str(r.get("row_id")) for r in records]
        failed = sum(1 for r in records if r.get("error") is not None)
        self.manifest.shards[index] = ShardEntry(rows=len(records), failed=failed, ids=ids_digest(ids))
        logger.info("%s: shard %d was finished but not in the manifest; taken back", self.path, index)
        self._write_manifest()

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def is_done(self, index: int, digest: str, *, retry_failed: bool = False) -> bool:
        """Whether shard ``index`` is finished for the rows whose ids digest to ``digest``."""
        entry = self.manifest.shards.get(index)
        if entry is None:
            return False
        if entry.ids != digest:
            logger.warning("%s: shard %d holds other rows than the input has there now; redoing it", self.path, index)
            return False
        return not (retry_failed and entry.failed)

    def commit(self, index: int, data: bytes, *, rows: int, failed: int, digest: str) -> None:
        """Write shard ``index`` (JSONL bytes) and record it in the manifest, each step atomic."""
        if self._lock is None:
            raise RuntimeError("ShardedOutput.commit before open()")
        write_atomically(self.path / shard_name(index), data, fsync=self.fsync)
        self.manifest.shards[index] = ShardEntry(rows=rows, failed=failed, ids=digest)
        self._write_manifest()

    def set_policy(self, mode: str, threshold: float | None) -> None:
        """Record the run's mode and threshold; warn when resuming an output written with others."""
        old = (self.manifest.mode, self.manifest.threshold)
        if self.manifest.shards and old != (mode, threshold):
            logger.warning(
                "%s was written with mode/threshold %s/%s; this run uses %s/%s: the output will mix them",
                self.path,
                *old,
                mode,
                threshold,
            )
        self.manifest.mode, self.manifest.threshold = mode, threshold

    def _write_manifest(self) -> None:
        data = self.manifest.model_dump_json(indent=1).encode("utf-8")
        write_atomically(self.path / MANIFEST, data, fsync=self.fsync)


def read_shards(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a sharded output's finished shards, in input order (what the local engine writes)."""
    directory = Path(path)
    manifest = Manifest.model_validate_json((directory / MANIFEST).read_bytes())
    for index in sorted(manifest.shards):
        yield from read_records(directory / shard_name(index))


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``manifest.json`` as plain JSON (for scripts and tests)."""
    loaded: dict[str, Any] = json.loads((Path(path) / MANIFEST).read_text())
    return loaded
