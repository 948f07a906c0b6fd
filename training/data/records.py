"""The three record kinds every training recipe consumes.

Loaders normalise public formats (AlignerTails, BeaverTails, PKU-SafeRLHF,
HH-RLHF, Do-Not-Answer, ...) into these pydantic models, so trainers never see
a source's own column names. JSONL files of these records are the interface
between corpus building and training (:mod:`aligner_proxy.core.files` reads and
writes them); :func:`tally` counts them for a data card.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="where the row came from, e.g. 'pku-saferlhf-mini'")


class CorrectionTriple(_Record):
    """(question, answer, correction): the Aligner's training example.

    ``kind`` says how the correction was made: ``unsafe_to_safe`` (a safer answer
    to the same question), ``identity`` (a good answer corrected to itself, so the
    corrector learns to leave good answers alone), ``upstream`` (the embedded
    model's own answer corrected to a provided safe output)."""

    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    correction: str = Field(min_length=1)
    kind: Literal["unsafe_to_safe", "identity", "upstream"] = "unsafe_to_safe"


class SafetyLabel(_Record):
    """An answer labelled safe or unsafe by people (or a trusted judge)."""

    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    is_safe: bool
    category: str | None = None
    model: str | None = Field(None, description="the model that wrote the answer, when the source says")


class PreferencePair(_Record):
    """Two answers to one prompt. ``safer`` says which is safer when the source says so
    (PKU-SafeRLHF); ``chosen`` is the preferred one (helpfulness or overall)."""

    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    safer: Literal["chosen", "rejected"] | None = None
    chosen_is_safe: bool | None = None
    rejected_is_safe: bool | None = None


def tally(items: Iterable[T], key: Callable[[T], tuple[str, str]]) -> dict[str, dict[str, int]]:
    """How many records fall under each ``(outer, inner)`` key, e.g. source then kind, for a data card."""
    nested: dict[str, dict[str, int]] = defaultdict(dict)
    for (outer, inner), n in sorted(Counter(key(i) for i in items).items()):
        nested[outer][inner] = n
    return dict(nested)
