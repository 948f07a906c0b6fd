"""Resumable upstream answers: a model answers instructions, and every answer is cached on disk.

The corrector corpus needs the upstream model's (SmolLM2's) own answers, and
on CPU they cost minutes to hours. Answers are cached in a JSONL file keyed by
(model, instruction, params) and flushed per batch, so a killed build resumes
where it stopped and a re-run, or a larger sample, generates only what is
missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pydantic
from pydantic import BaseModel

from aligner_proxy.core.generation import ChatMessage, Generation, GenerationParams

logger = logging.getLogger(__name__)


class CorpusGenerator(Protocol):
    """What the build needs of a model (``core.backends.transformers.TransformersGenerator`` fits)."""

    @property
    def model_id(self) -> str: ...

    def render_chat(self, messages: list[ChatMessage]) -> str: ...

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]: ...

    def count_tokens(self, text: str) -> int: ...


class CachedGeneration(BaseModel):
    """One cached upstream answer (a line of the generation cache)."""

    key: str
    model: str
    instruction: str
    text: str
    finish_reason: str
    completion_tokens: int


_KEYED_ALWAYS = frozenset({"max_new_tokens", "temperature", "top_p", "stop", "seed"})
"""The fields keys have always held; any later field enters a key only when it differs from its default."""


def generation_key(model: str, instruction: str, params: GenerationParams) -> str:
    """The cache key of one answer. Decoding fields left at their defaults are not part of it, so adding
    a field to :class:`GenerationParams` does not invalidate every cached answer."""
    defaults = dataclasses.asdict(GenerationParams())
    fields = {
        k: v for k, v in dataclasses.asdict(params).items() if k in _KEYED_ALWAYS or v != defaults.get(k, object())
    }
    payload = json.dumps([model, instruction, fields], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def read_generation_cache(path: Path) -> dict[str, CachedGeneration]:
    """Cached answers by key; a line torn by a crash is skipped (and logged), so it is generated again."""
    cached: dict[str, CachedGeneration] = {}
    if not path.is_file():
        return cached
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = CachedGeneration.model_validate_json(line)
            except pydantic.ValidationError:
                logger.warning("%s:%d: unreadable cache line skipped", path, number)
                continue
            cached[entry.key] = entry
    return cached


@dataclasses.dataclass
class GenerationRun:
    """The answers for one list of instructions, and what it took to get them this time."""

    answers: dict[str, CachedGeneration]  # instruction → answer
    generated: int = 0
    from_cache: int = 0
    seconds: float = 0.0
    completion_tokens: int = 0


def generate_cached(
    generator: CorpusGenerator,
    instructions: Sequence[str],
    params: GenerationParams,
    cache_path: Path,
    *,
    batch_size: int = 8,
) -> GenerationRun:
    """Answer ``instructions`` with the generator's chat template, reusing and extending the JSONL cache.

    Each batch is appended and fsynced before the next starts, so after a
    kill at most the batch in flight is lost, and a re-run generates only
    what is missing."""
    cached = read_generation_cache(cache_path)
    unique = list(dict.fromkeys(instructions))
    keys = {text: generation_key(generator.model_id, text, params) for text in unique}
    todo = [text for text in unique if keys[text] not in cached]
    run = GenerationRun(answers={}, from_cache=len(unique) - len(todo))
    if todo:
        logger.info("generating %d answers with %s (%d cached)", len(todo), generator.model_id, run.from_cache)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        if not _ends_with_newline(cache_path):
            with cache_path.open("a", encoding="utf-8") as handle:  # a torn last line must not swallow the next
                handle.write("\n")
    started = time.perf_counter()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        prompts = [generator.render_chat([ChatMessage(role="user", content=text)]) for text in batch]
        outputs = generator.generate_batch(prompts, params)
        entries = [
            CachedGeneration(
                key=keys[text],
                model=generator.model_id,
                instruction=text,
                text=out.text,
                finish_reason=out.finish_reason,
                completion_tokens=out.completion_tokens,
            )
            for text, out in zip(batch, outputs, strict=True)
        ]
        with cache_path.open("a", encoding="utf-8") as handle:
            handle.writelines(entry.model_dump_json() + "\n" for entry in entries)
            handle.flush()
            os.fsync(handle.fileno())
        for entry in entries:
            cached[entry.key] = entry
        run.generated += len(entries)
        run.completion_tokens += sum(e.completion_tokens for e in entries)
        elapsed = time.perf_counter() - started
        logger.info(
            "generated %d/%d in %.0f s (%.1f tok/s, about %.0f s to go)",
            run.generated,
            len(todo),
            elapsed,
            run.completion_tokens / max(elapsed, 1e-9),
            elapsed / run.generated * (len(todo) - run.generated),
        )
    run.seconds = time.perf_counter() - started
    run.answers = {text: cached[keys[text]] for text in unique}
    return run


def _ends_with_newline(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return True
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
