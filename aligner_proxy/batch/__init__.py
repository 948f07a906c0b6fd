"""Batch correction of whole files: the ``aligner-proxy correct`` command, importable.

A file of (question, answer) rows — JSONL, CSV, Parquet, a ``datasets``
directory or Hub id — goes through the same core the proxy runs
(:class:`~aligner_proxy.core.policy.AlignmentPipeline`), in process or against a
running proxy / OpenAI-compatible server, and comes out as JSONL with the
original fields plus the correction, costs, status and model ids.

The machinery is split so that other batch jobs (the weak-to-strong script
answers prompts with it) reuse the hard parts:

- :mod:`~aligner_proxy.batch.readers`: rows with a stable id from any input format;
- :mod:`~aligner_proxy.batch.writer`: an append-only JSONL output that survives ``kill -9``;
- :mod:`~aligner_proxy.batch.runner`: the resumable loop (skip done ids, isolate failing rows, progress);
- :mod:`~aligner_proxy.batch.correctors`: where corrections come from (in process, proxy, OpenAI-compatible);
- :mod:`~aligner_proxy.batch.correct`: the correction job and :func:`correct_file`.

Nothing here imports torch at import time.
"""

from __future__ import annotations

from aligner_proxy.batch.config import BatchConfig
from aligner_proxy.batch.correct import CorrectionFields, CorrectionJob, RowMapping, acorrect_file, correct_file
from aligner_proxy.batch.correctors import CorrectionBackend, PipelineBackend, ProxyBackend, load_backend
from aligner_proxy.batch.readers import FileSource, InputRow, ListSource, RowError, RowSource, row_hash
from aligner_proxy.batch.runner import BatchJob, Produced, RunStats, run_resumable
from aligner_proxy.batch.writer import OutputLockedError, ResumableWriter, write_parquet

__all__ = [
    "BatchConfig",
    "BatchJob",
    "CorrectionBackend",
    "CorrectionFields",
    "CorrectionJob",
    "FileSource",
    "InputRow",
    "ListSource",
    "OutputLockedError",
    "PipelineBackend",
    "Produced",
    "ProxyBackend",
    "ResumableWriter",
    "RowError",
    "RowMapping",
    "RowSource",
    "RunStats",
    "acorrect_file",
    "correct_file",
    "load_backend",
    "row_hash",
    "run_resumable",
    "write_parquet",
]
