"""Deterministic text keys, splits, samples and dedup for corpora built from overlapping public data.

Several sources ask the same question with different case and spacing, and a
question seen in training must never be scored in validation. Everything here
is a pure function of the text and a seed (a SHA-256 hash, not Python's salted
``hash``), so a split or a sample is the same on every machine and every run:
the corpus builder and the weak-to-strong prompts split by the same hash, and a
larger sample extends a smaller one, which keeps cached generations useful.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

Split = Literal["train", "validation"]
T = TypeVar("T")

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_whitespace(text: str) -> str:
    """One space between words, at most one blank line between paragraphs, no edge whitespace."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def question_key(question: str) -> str:
    """The identity of a question for dedup and splitting: case and whitespace do not matter."""
    return " ".join(question.lower().split())


def stable_hash(*parts: object) -> int:
    """A 64-bit integer from the SHA-256 of the parts: the same on every machine and run."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def split_of(question: str, validation_fraction: float, seed: int = 0) -> Split:
    """Deterministic split of a question; every answer to it lands on the same side."""
    return "validation" if stable_hash(seed, "split", question_key(question)) < validation_fraction * 2**64 else "train"


EVAL_FRACTION = 0.1
"""Share of questions kept for the project's evaluations: no corpus trains or calibrates on them."""


def in_eval_bucket(question: str, fraction: float = EVAL_FRACTION, seed: int = 0) -> bool:
    """Whether ``question`` belongs to the evaluation bucket (a hash of its normalised text, so every
    machine and every corpus agrees). The gate corpus drops these questions from every source, and
    the evals' tasks with ``bucket: eval`` draw their prompts from them."""
    return stable_hash(seed, "eval", question_key(question)) < fraction * 2**64


def hash_sample(items: Iterable[T], n: int, seed: int, key: Callable[[T], str]) -> list[T]:
    """The first ``n`` items in a seeded hash order: stable, and ``n+k`` extends ``n`` (the cache stays useful)."""
    return sorted(items, key=lambda item: stable_hash(seed, "sample", key(item)))[: max(n, 0)]


def dedupe(items: Iterable[T], key: Callable[[T], object]) -> tuple[list[T], list[T]]:
    """Keep the first item per ``key``; returns (kept, duplicates) so callers can count what went."""
    seen: set[object] = set()
    kept: list[T] = []
    duplicates: list[T] = []
    for item in items:
        k = key(item)
        if k in seen:
            duplicates.append(item)
        else:
            seen.add(k)
            kept.append(item)
    return kept, duplicates


def pair_key(question: str, answer: str) -> tuple[str, str]:
    """The dedup key of a (question, answer) pair: normalised question, whitespace-normalised answer."""
    return question_key(question), normalize_whitespace(answer)
