"""What a target answered: the tasks' items, one cached chat answer each, and the answers derived from them.

The runner asks targets; :mod:`evals.replay` derives answers in process. Both
speak in these types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from aligner_proxy.core.annotation import AlignerAnnotation
from aligner_proxy.core.generation import ChatMessage
from evals.config import EvalConfig
from evals.errors import TargetError
from evals.loaders import EvalPrompt
from evals.tasks import TaskSpec


@dataclass(frozen=True)
class Task:
    spec: TaskSpec
    prompts: list[EvalPrompt]
    metrics: list[str]


class CachedAnswer(BaseModel):
    """What the harness keeps of one chat completion."""

    answer: str
    original: str | None = None
    aligner: AlignerAnnotation | None = None
    total_tokens: int | None = None
    latency_ms: float
    model: str


@dataclass(frozen=True)
class Item:
    task: Task
    prompt: EvalPrompt


@dataclass
class ItemAnswer:
    """One item and what a target answered to it (``answer`` is ``None``, with an ``error``, when it failed)."""

    item: Item
    answer: CachedAnswer | None
    error: str | None = None


def parse_answer(data: dict[str, Any], latency_ms: float) -> CachedAnswer:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TargetError(f"response without choices: {str(data)[:200]}")
    message = choices[0].get("message") or {}
    annotation = None
    if data.get("aligner") is not None:
        try:
            annotation = AlignerAnnotation.model_validate(data["aligner"])
        except ValidationError as exc:
            raise TargetError(f"unreadable aligner annotation: {exc}") from None
    usage = data.get("usage") or {}
    return CachedAnswer(
        answer=str(message.get("content") or ""),
        original=annotation.original if annotation else None,
        aligner=annotation,
        total_tokens=usage.get("total_tokens") if isinstance(usage, dict) else None,
        latency_ms=latency_ms,
        model=str(data.get("model", "")),
    )


def chat_messages(config: EvalConfig, task: Task, prompt: EvalPrompt) -> list[ChatMessage]:
    """The chat a prompt is sent as: the task's (or the config's) system prompt, then the prompt."""
    system = task.spec.system_prompt or config.generation.system_prompt
    return ([ChatMessage(role="system", content=system)] if system else []) + [
        ChatMessage(role="user", content=prompt.prompt)
    ]


def originals(outcomes: Sequence[ItemAnswer]) -> list[ItemAnswer]:
    """What the upstream alone answered, read from a proxy target's annotations: ``original`` as the answer,
    the upstream's share of the latency, no annotation (nothing was checked)."""
    result = []
    for outcome in outcomes:
        answer = outcome.answer
        if answer is None or answer.aligner is None:
            error = outcome.error or "the source target's answer carries no aligner annotation"
            result.append(ItemAnswer(outcome.item, None, error))
            continue
        result.append(
            ItemAnswer(
                outcome.item,
                CachedAnswer(
                    answer=answer.original if answer.original is not None else answer.answer,
                    total_tokens=answer.total_tokens,
                    latency_ms=answer.aligner.timings.upstream_ms,
                    model=answer.model,
                ),
            )
        )
    return result
