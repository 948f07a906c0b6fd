"""The Ray engine of ``aligner-proxy correct --engine ray``: shards of rows corrected by a pool of Ray actors.

It is another executor of the same per-row work, not a second implementation:

- the driver reads the input with the local engine's
  :class:`~aligner_proxy.batch.readers.FileSource` (so row ids, unreadable
  rows and their error messages are the same), drops rows repeating an earlier
  id, and cuts the rest into shards of ``shard_rows`` rows;
- shards not finished by an earlier run go into the object store
  (``ray.put``: the driver never holds the whole input) and become a
  :class:`ray.data.Dataset` with one row per shard;
- ``map_batches`` runs :class:`ShardCorrector` on an actor pool: each actor
  loads the backend once (:func:`~aligner_proxy.batch.correctors.load_backend`,
  the core pipeline the local engine loads) and runs each shard through
  :func:`~aligner_proxy.batch.runner.run_resumable` with the local engine's
  :class:`~aligner_proxy.batch.correct.CorrectionJob`: same policy, same
  batching, same failure isolation, same records;
- the driver writes each finished shard as it streams back
  (:class:`~aligner_proxy.batch.shards.ShardedOutput`: atomic shard files and
  manifest), so a killed run loses at most the shards in flight.

Why not ``ray.data.read_json`` / ``read_parquet``: Arrow unifies a file's
schema, so a row missing a field comes back with it set to null and CSV cells
come back typed; the rows would hash to other ids and the output would differ
from the local engine's. Reading is cheap next to generating; the driver's one
reader is not the bottleneck (docs/batch.md has the numbers).

Only the driver touches the filesystem: on a cluster the input and the output
live where the driver runs; actors receive rows and return JSONL bytes.

ray is imported inside the functions that need it (the ``ray`` extra).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aligner_proxy.batch.config import BatchConfig
from aligner_proxy.batch.correct import CorrectionJob, policy_for, row_mapping
from aligner_proxy.batch.readers import FileSource, InputRow, RowSource
from aligner_proxy.batch.runner import ProgressFn, RecordList, RowsSource, RunStats, run_resumable
from aligner_proxy.batch.shards import ShardedOutput, ids_digest, read_shards
from aligner_proxy.batch.writer import encode_records, records_to_parquet
from aligner_proxy.core.loading import CoreConfig

if TYPE_CHECKING:
    from aligner_proxy.batch.correctors import CorrectionBackend

logger = logging.getLogger(__name__)

_INSTALL_HINT = "the ray engine needs Ray Data: pip install 'aligner-proxy[ray]'"


@dataclass
class Shard:
    """Rows ``index * shard_rows`` onwards, after duplicate ids are dropped."""

    index: int
    rows: list[InputRow]

    @property
    def digest(self) -> str:
        return ids_digest([row.id for row in self.rows])


def cut_shards(source: RowSource, shard_rows: int, *, limit: int | None, stats: RunStats) -> Iterator[Shard]:
    """Stream ``source`` as shards, dropping (and counting) rows whose id appeared earlier, as the local engine does."""
    seen: set[str] = set()
    rows: list[InputRow] = []
    index = 0
    for row in source.rows():
        if limit is not None and row.index >= limit:
            break
        if row.id in seen:
            stats.duplicates += 1
            continue
        seen.add(row.id)
        rows.append(row)
        if len(rows) == shard_rows:
            yield Shard(index, rows)
            index, rows = index + 1, []
    if rows:
        yield Shard(index, rows)


class ShardCorrector:
    """A Ray actor's work: load the backend once, then correct whole shards with the local engine's job.

    ``__call__`` takes a batch of shard rows (``shard``, ``ids``, ``rows``: an
    ``ObjectRef`` to the shard's :class:`InputRow` list) and returns, per shard,
    its JSONL bytes and counts. One event loop per actor, so the pipeline's
    async parts (micro-batching, the model thread) live as long as the actor.
    """

    def __init__(self, config: BatchConfig, core: CoreConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        # Loaded inside the actor's loop, as the local engine loads it inside its own: a backend that binds
        # to the running loop when built (vLLM's async engine) then finds the loop it will run in.
        self.backend: CorrectionBackend = self.loop.run_until_complete(_load_backend(config, core))
        self.job = CorrectionJob(self.backend, policy_for(config), row_mapping(config))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        import ray

        out: dict[str, list[Any]] = {"shard": [], "ids": [], "data": [], "rows": [], "failed": [], "tokens": []}
        for index, digest, ref in zip(batch["shard"], batch["ids"], batch["rows"], strict=True):
            rows: list[InputRow] = ray.get(ref)
            sink = RecordList()
            stats = self.loop.run_until_complete(
                run_resumable(
                    RowsSource(rows, f"shard {index}"),
                    self.job,
                    sink,
                    batch_size=self.config.batch_size,
                    concurrency=self.config.concurrency,
                )
            )
            out["shard"].append(int(index))
            out["ids"].append(str(digest))
            out["data"].append(encode_records(sink.records))
            out["rows"].append(len(sink.records))
            out["failed"].append(stats.failed)
            out["tokens"].append(stats.tokens)
        return out


async def _load_backend(config: BatchConfig, core: CoreConfig) -> CorrectionBackend:
    from aligner_proxy.batch.correctors import load_backend

    return load_backend(config, core)


def correct_with_ray(
    config: BatchConfig,
    core: CoreConfig | None = None,
    *,
    source: RowSource | None = None,
    progress: ProgressFn | None = None,
) -> RunStats:
    """Correct ``config.input_path`` into the shard directory ``config.output_path`` on Ray; resumes a killed run.

    Joins ``config.ray_address`` (or the running Ray instance, or starts a
    local one) and leaves a Ray instance it did not start running.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError(_INSTALL_HINT) from exc

    core = core or CoreConfig()
    source = source or FileSource(config.input_path, id_field=config.id_field, split=config.split)
    started_ray = not ray.is_initialized()
    if started_ray:
        # Actors' own output (progress bars of model loading) stays in Ray's logs; their failures reach the user
        # through the error this raises.
        ray.init(
            address=config.ray_address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    try:
        with ShardedOutput(config.output_path, shard_rows=config.shard_rows, fsync=config.fsync) as output:
            stats = _run(ray, config, core, source, output, progress)
    finally:
        if started_ray:
            ray.shutdown()
    if config.parquet_path:
        rows = records_to_parquet(list(read_shards(config.output_path)), config.parquet_path)
        logger.info("wrote %d rows to %s", rows, config.parquet_path)
    logger.info("%s: %s", config.output_path, stats.as_dict())
    return stats


def _run(
    ray: Any,
    config: BatchConfig,
    core: CoreConfig,
    source: RowSource,
    output: ShardedOutput,
    progress: ProgressFn | None,
) -> RunStats:
    if config.retry_failed:
        redo = sorted(i for i, entry in output.manifest.shards.items() if entry.failed)
        logger.info("%s: redoing %d shards with failed rows", output.path, len(redo))
    stats = RunStats()
    pending: list[dict[str, Any]] = []
    for shard in cut_shards(source, config.shard_rows, limit=config.limit, stats=stats):
        if output.is_done(shard.index, shard.digest, retry_failed=config.retry_failed):
            stats.skipped += len(shard.rows)
            continue
        pending.append({"shard": shard.index, "ids": shard.digest, "rows": ray.put(shard.rows)})
        stats.total += len(shard.rows)
    if stats.duplicates:
        logger.warning("%s: %d rows repeat an earlier row's id and are skipped", source.name, stats.duplicates)
    logger.info("%s: %d rows (%d shards) to do, %d done", source.name, stats.total, len(pending), stats.skipped)
    if progress:
        progress(stats)
    if not pending:
        return stats

    # The threshold a run applies is known once a backend is loaded; an actor reports it in its records.
    output.set_policy(config.mode, config.threshold)
    actors = min(config.num_actors, len(pending))
    corrected = ray.data.from_items(pending, override_num_blocks=len(pending)).map_batches(
        ShardCorrector,
        fn_constructor_kwargs={"config": config, "core": core},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=config.cpus_per_actor,
        num_gpus=config.actor_gpus(),
    )
    try:
        for result in corrected.iter_rows():
            output.commit(
                int(result["shard"]),
                bytes(result["data"]),
                rows=int(result["rows"]),
                failed=int(result["failed"]),
                digest=str(result["ids"]),
            )
            stats.failed += int(result["failed"])
            stats.done += int(result["rows"]) - int(result["failed"])
            stats.tokens += int(result["tokens"])
            if progress:
                progress(stats)
    except ray.exceptions.RayError as exc:
        # An actor that cannot load its models, or died: say why, keep what is written (a re-run resumes).
        raise RuntimeError(f"the ray engine stopped: {_cause(exc)}") from exc
    return stats


def _cause(exc: BaseException) -> str:
    """The root of a Ray error: its message ends with the remote traceback, whose last line names it."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[-1] if lines else type(cause).__name__
