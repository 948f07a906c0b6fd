"""The knobs of one batch-correction run, shared by :func:`~aligner_proxy.batch.correct_file` and the CLI.

Which corrector and scorer to load is not here: that is the core's
:class:`~aligner_proxy.core.loading.CoreConfig`, which the CLI builds from the
proxy's settings (``--corrector``, ``--scorer``, ``--config``, ``ALIGNER_*``),
so a batch run and a running proxy configured the same way correct the same way.
This dataclass holds what is specific to a file: where rows come from, how fields map, where results go, how the run is
paced. The CLI takes its help texts from the ``metadata`` here (TRL style).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

BackendKind = Literal["local", "vllm", "proxy", "openai"]
EngineKind = Literal["local", "ray"]


@dataclass
class BatchConfig:
    """One ``aligner-proxy correct`` run. Re-running with the same config resumes it."""

    input_path: str = field(
        default="", metadata={"help": "JSONL, CSV or Parquet file, a `datasets` directory, or a Hub dataset id."}
    )
    output_path: str = field(
        default="",
        metadata={"help": "JSONL output, appended to and resumed (--engine ray: a directory of shards + manifest)."},
    )
    parquet_path: str | None = field(
        default=None, metadata={"help": "Also write the finished output as Parquet here (needs pyarrow)."}
    )
    split: str = field(default="train", metadata={"help": "Split to read from a `datasets` directory or Hub id."})
    question_field: str = field(default="question", metadata={"help": "Field holding the question."})
    answer_field: str = field(default="answer", metadata={"help": "Field holding the answer to correct."})
    messages_field: str = field(
        default="messages",
        metadata={"help": "Field of OpenAI-style messages, used when a row has no question field."},
    )
    id_field: str | None = field(
        default=None, metadata={"help": "Field with a unique row id; default: a stable hash of the row."}
    )
    mode: Literal["always", "gated"] = field(
        default="always", metadata={"help": "always: correct every answer; gated: only answers above --threshold."}
    )
    threshold: float | None = field(
        default=None,
        metadata={
            "help": "Cost above which an answer is corrected in gated mode (default: the scorer's calibrated one)."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Only consider the first N input rows."})
    batch_size: int = field(default=8, metadata={"help": "Rows per corrector call."})
    concurrency: int = field(default=1, metadata={"help": "Batches in flight at once (raise it for remote backends)."})
    backend: BackendKind = field(
        default="local",
        metadata={
            "help": "local: transformers in process; vllm: vLLM in process; proxy: a running aligner-proxy's "
            "/v1/aligner/correct; openai: an OpenAI-compatible /v1/completions server serving the Aligner "
            "(scored here)."
        },
    )
    url: str | None = field(default=None, metadata={"help": "Base URL ending in /v1 for the proxy / openai backends."})
    remote_model: str | None = field(
        default=None, metadata={"help": "Model name sent to the openai backend (default: the corrector spec)."}
    )
    api_key: str | None = field(default=None, metadata={"help": "Bearer key for the remote backends."})
    request_timeout_s: float = field(default=300.0, metadata={"help": "Timeout of one remote request."})
    max_input_chars: int = field(
        default=200_000, metadata={"help": "Rows whose question + answer exceed this fail without a model call."}
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Corrector token budget (default: the core's corrector_max_new_tokens)."}
    )
    temperature: float = field(default=0.0, metadata={"help": "Corrector temperature; 0 is greedy (reproducible)."})
    seed: int | None = field(default=0, metadata={"help": "Sampling seed, applied per row when temperature > 0."})
    retry_failed: bool = field(default=False, metadata={"help": "Drop failed rows from the output and redo them."})
    fsync: bool = field(default=True, metadata={"help": "fsync the output after every batch (power-loss safe)."})
    engine: EngineKind = field(
        default="local",
        metadata={
            "help": "local: one process; ray: shards of rows corrected by a pool of Ray actors (ray extra), "
            "each loading the backend once."
        },
    )
    ray_address: str | None = field(
        default=None, metadata={"help": "Ray cluster to join (e.g. auto, ray://head:10001); default: a local one."}
    )
    num_actors: int = field(default=1, metadata={"help": "Ray engine: actors, each with its own copy of the models."})
    shard_rows: int = field(
        default=1000, metadata={"help": "Ray engine: rows per shard, the unit written, resumed and scheduled."}
    )
    cpus_per_actor: float = field(default=1.0, metadata={"help": "Ray engine: CPUs reserved per actor."})
    gpus_per_actor: float | None = field(
        default=None, metadata={"help": "Ray engine: GPUs reserved per actor (default: 1 with --backend vllm, else 0)."}
    )

    def __post_init__(self) -> None:
        if self.mode not in ("always", "gated"):
            raise ValueError(f"mode must be 'always' or 'gated', not {self.mode!r}")
        if self.backend not in ("local", "vllm", "proxy", "openai"):
            raise ValueError(f"backend must be local, vllm, proxy or openai, not {self.backend!r}")
        if self.backend in ("proxy", "openai") and not self.url:
            raise ValueError(f"the {self.backend} backend needs a url")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError("batch_size and concurrency must be >= 1")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be local or ray, not {self.engine!r}")
        if self.num_actors < 1 or self.shard_rows < 1:
            raise ValueError("num_actors and shard_rows must be >= 1")
        if self.cpus_per_actor < 0 or (self.gpus_per_actor is not None and self.gpus_per_actor < 0):
            raise ValueError("cpus_per_actor and gpus_per_actor must be >= 0")

    def actor_gpus(self) -> float:
        """GPUs one Ray actor reserves: vLLM needs one; the transformers backend runs on CPU unless told."""
        if self.gpus_per_actor is not None:
            return self.gpus_per_actor
        return 1.0 if self.backend == "vllm" else 0.0


def help_text(name: str) -> str:
    """The ``metadata["help"]`` of a :class:`BatchConfig` field (the CLI shows it)."""
    for f in fields(BatchConfig):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)
