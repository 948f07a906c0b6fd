"""Eval prompts that also appear in a training corpus, found by hashing normalised text.

A prompt the corrector or scorer was trained on measures memory, not
generalisation, so the harness warns before it runs. Text is normalised
(Unicode NFKC, case-folded, every run of non-alphanumerics made one space)
and hashed (SHA-256); equal hashes are overlaps. Paraphrases are not caught.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from evals.loaders import EvalPrompt, iter_texts

logger = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[\W_]+")


def normalize_text(text: str) -> str:
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()


class OverlapReport(BaseModel):
    """Which eval prompts (by task, by id) a training file also holds."""

    corpus_files: list[str] = Field(default_factory=list, description="files read")
    missing_files: list[str] = Field(default_factory=list, description="configured but not found")
    corpus_texts: int = 0
    overlaps: dict[str, list[str]] = Field(default_factory=dict, description="task → ids of overlapping prompts")

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.overlaps.values())


def corpus_hashes(paths: Iterable[Path], fields: Sequence[str]) -> tuple[set[str], OverlapReport]:
    report = OverlapReport()
    hashes: set[str] = set()
    for path in paths:
        if not path.is_file():
            report.missing_files.append(str(path))
            continue
        report.corpus_files.append(str(path))
        for text in iter_texts(path, tuple(fields)):
            hashes.add(text_hash(text))
            report.corpus_texts += 1
    return hashes, report


def check_overlap(
    prompts_by_task: Mapping[str, Sequence[EvalPrompt]], paths: Iterable[Path], fields: Sequence[str]
) -> OverlapReport:
    """Find eval prompts present in the training files; logs a warning per task that has any."""
    hashes, report = corpus_hashes(paths, fields)
    for missing in report.missing_files:
        logger.warning("training corpus %s not found: eval prompts not checked against it", missing)
    for task, prompts in prompts_by_task.items():
        ids = [p.id for p in prompts if text_hash(p.prompt) in hashes]
        if ids:
            report.overlaps[task] = ids
            logger.warning(
                "task %s: %d of %d prompts also appear in the training corpus (%s): their numbers measure memory",
                task,
                len(ids),
                len(prompts),
                ", ".join(ids[:10]) + (" …" if len(ids) > 10 else ""),
            )
    return report
