"""The correction job and :func:`correct_file`: what ``aligner-proxy correct`` runs.

Each input row becomes a :class:`~aligner_proxy.core.corrector.CorrectionInput`
(:class:`RowMapping`: question/answer fields, or OpenAI-style ``messages``
whose last assistant turn is the answer), goes through a
:class:`~aligner_proxy.batch.correctors.CorrectionBackend` under a
fail-closed :class:`~aligner_proxy.core.policy.PolicyConfig` (a failure must
become an error row, not a silently unchecked answer), and comes back as the
original row plus :class:`CorrectionFields`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from aligner_proxy.batch.config import BatchConfig
from aligner_proxy.batch.correctors import CorrectionBackend, load_backend
from aligner_proxy.batch.readers import FileSource, InputRow, RowError, RowSource
from aligner_proxy.batch.runner import Produced, ProgressFn, RunStats, run_resumable
from aligner_proxy.batch.writer import ResumableWriter, write_parquet
from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.core.loading import CoreConfig
from aligner_proxy.core.policy import PolicyConfig

logger = logging.getLogger(__name__)


class CorrectionFields(BaseModel):
    """The fields a correction run adds to every row (they replace input fields of the same name).

    ``correction`` is the text the policy settled on: the rewrite, or the
    original where the gate passed it or the rewrite was worse. ``status`` is
    the policy's (``modified``, ``passed``, ...) or ``failed`` with ``error``
    saying why.
    """

    correction: str | None
    status: str
    cost_before: float | None = None
    cost_after: float | None = None
    corrector: str | None = None
    scorer: str | None = None
    mode: str
    threshold: float | None  # None: the scorer's calibrated threshold
    error: str | None = None


@dataclass(frozen=True)
class RowMapping:
    """Which fields of a row hold the question and the answer."""

    question_field: str = "question"
    answer_field: str = "answer"
    messages_field: str = "messages"
    max_input_chars: int = 200_000

    def to_input(self, data: Mapping[str, Any]) -> CorrectionInput:
        """The row as a correction item; raises :class:`RowError` saying what is wrong with it."""
        if self.question_field in data:
            question = data[self.question_field]
            if not isinstance(question, str):
                raise RowError(f"field {self.question_field!r} is not a string")
            answer = _answer(data, self.answer_field)
            if answer is None:
                raise RowError(f"field {self.answer_field!r} missing or not a string")
            item = CorrectionInput(question=question, answer=answer)
        elif self.messages_field in data:
            item = self._from_messages(data)
        else:
            raise RowError(f"field {self.question_field!r} missing (and no {self.messages_field!r} field)")
        question = item.question
        size = len(item.answer) + (
            len(question) if isinstance(question, str) else sum(len(m.content) for m in question)
        )
        if size > self.max_input_chars:
            raise RowError(f"input too long: {size} characters > {self.max_input_chars}")
        return item

    def _from_messages(self, data: Mapping[str, Any]) -> CorrectionInput:
        raw = data[self.messages_field]
        if not isinstance(raw, list) or not raw:
            raise RowError(f"field {self.messages_field!r} is not a non-empty list of messages")
        messages = [_message(m, i) for i, m in enumerate(raw)]
        answer = _answer(data, self.answer_field)
        if answer is None:
            if messages[-1].role != "assistant":
                raise RowError(f"no {self.answer_field!r} field and the last message is not the assistant's")
            answer, messages = messages[-1].content, messages[:-1]
        if not any(m.role == "user" for m in messages):
            raise RowError("the messages before the answer have no user turn")
        return CorrectionInput(question=messages, answer=answer)


def _answer(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _message(raw: object, index: int) -> ChatMessage:
    if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
        raise RowError(f"message {index} is not an object with a 'role'")
    content = raw.get("content")
    if content is None:
        content = ""
    elif isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    elif not isinstance(content, str):
        raise RowError(f"message {index} has content that is neither text nor content parts")
    return ChatMessage(role=raw["role"], content=content)


class CorrectionJob:
    """A :class:`~aligner_proxy.batch.runner.BatchJob` that corrects each row's answer."""

    def __init__(self, backend: CorrectionBackend, policy: PolicyConfig, mapping: RowMapping | None = None) -> None:
        if policy.mode not in ("always", "gated"):
            raise ValueError("a batch correction runs in 'always' or 'gated' mode")
        self.backend = backend
        self.policy = policy
        self.mapping = mapping or RowMapping()

    def prepare(self, row: InputRow) -> CorrectionInput:
        return self.mapping.to_input(row.data)

    async def run(self, items: list[CorrectionInput]) -> list[Produced]:
        outcomes = await self.backend.align(items, self.policy)
        produced = []
        for outcome in outcomes:
            if outcome.status == "unchecked":  # a backend that failed open: still a failure here
                raise RuntimeError(outcome.error or "the alignment stage failed")
            fields = self._fields(
                correction=outcome.text,
                status=outcome.status,
                cost_before=outcome.cost_before,
                cost_after=outcome.cost_after,
            )
            produced.append(Produced(fields, outcome.corrector_completion_tokens))
        return produced

    def failed(self, error: str) -> dict[str, Any]:
        return self._fields(correction=None, status="failed", error=error)

    def _fields(self, **values: Any) -> dict[str, Any]:
        return CorrectionFields(
            corrector=self.backend.corrector_id,
            scorer=self.backend.scorer_id,
            mode=self.policy.mode,
            threshold=self.backend.threshold(self.policy),
            **values,
        ).model_dump()


def policy_for(config: BatchConfig) -> PolicyConfig:
    """Fail closed: in a batch a failure must become an error row, never an unchecked 'answer'.

    Never block: a row keeps its correction and says ``flagged`` when the scorer still objects,
    so whoever uses the data set decides what to do with it."""
    return PolicyConfig(mode=config.mode, threshold=config.threshold, block=False, failure_policy="fail_closed")


def row_mapping(config: BatchConfig) -> RowMapping:
    return RowMapping(config.question_field, config.answer_field, config.messages_field, config.max_input_chars)


async def acorrect_file(
    config: BatchConfig,
    backend: CorrectionBackend | None = None,
    *,
    core: CoreConfig | None = None,
    source: RowSource | None = None,
    progress: ProgressFn | None = None,
) -> RunStats:
    """Correct ``config.input_path`` into ``config.output_path``, resuming what a previous run did.

    ``backend`` defaults to :func:`load_backend` with ``core`` (default: the
    core's defaults; the CLI passes what its settings and flags name); a backend
    passed in is not closed.
    ``source`` overrides the input file (rows built in code). The Ray engine is
    not async: :func:`correct_file` runs it.
    """
    if config.engine != "local":
        raise ValueError(f"acorrect_file runs the local engine; correct_file runs --engine {config.engine}")
    source = source or FileSource(config.input_path, id_field=config.id_field, split=config.split)
    owned = backend is None
    with ResumableWriter(config.output_path, fsync=config.fsync) as writer:
        if config.retry_failed:
            writer.drop_failed()
        if backend is None:
            backend = load_backend(config, core or CoreConfig())
        _warn_on_config_change(writer, config, backend.threshold(policy_for(config)))
        job = CorrectionJob(backend, policy_for(config), row_mapping(config))
        try:
            stats = await run_resumable(
                source,
                job,
                writer,
                batch_size=config.batch_size,
                concurrency=config.concurrency,
                limit=config.limit,
                progress=progress,
            )
        finally:
            if owned:
                await backend.aclose()
    if config.parquet_path:
        rows = write_parquet(config.output_path, config.parquet_path)
        logger.info("wrote %d rows to %s", rows, config.parquet_path)
    logger.info("%s: %s", config.output_path, stats.as_dict())
    return stats


def correct_file(
    config: BatchConfig,
    backend: CorrectionBackend | None = None,
    *,
    core: CoreConfig | None = None,
    progress: ProgressFn | None = None,
) -> RunStats:
    """Blocking :func:`acorrect_file` for scripts and notebooks, or the Ray engine when ``config.engine`` says so.

    The Ray engine loads its own backends in its actors: ``backend`` must be None.
    """
    import asyncio

    if config.engine == "ray":
        from aligner_proxy.batch.ray_engine import correct_with_ray

        if backend is not None:
            raise ValueError("the ray engine loads its backend in each actor; pass core=, not backend=")
        return correct_with_ray(config, core, progress=progress)

    return asyncio.run(acorrect_file(config, backend, core=core, progress=progress))


def _warn_on_config_change(writer: ResumableWriter, config: BatchConfig, threshold: float | None) -> None:
    """Resuming into an output written with another mode or threshold mixes two runs; say so."""
    if not writer.done:
        return
    from aligner_proxy.batch.writer import read_records

    seen = {(r.get("mode"), r.get("threshold")) for r in read_records(writer.path)[-50:]}
    if threshold is None:  # not known yet (a proxy says it with its first answer): compare the modes
        seen = {(mode, None) for mode, _ in seen}
    if seen and seen != {(config.mode, threshold)}:
        logger.warning(
            "%s was written with mode/threshold %s; this run uses %s/%s: the output will mix them",
            writer.path,
            sorted(seen, key=str),
            config.mode,
            threshold,
        )
