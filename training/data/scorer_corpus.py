"""The scorer corpus: human safety labels and same-question safe-vs-unsafe pairs for the cost models.

Labels are cleaned and deduplicated (a duplicate with a conflicting label is
counted apart), pairs are drawn per question within one source, and both are
split by question like the corrector corpus.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aligner_proxy.core.files import write_jsonl
from training.data.records import PreferencePair, SafetyLabel, tally
from training.data.sources import CorpusConfig, Sources
from training.data.splits import (
    Split,
    dedupe,
    hash_sample,
    normalize_whitespace,
    pair_key,
    question_key,
    split_of,
)

T = TypeVar("T")


def clean_labels(
    labels: Iterable[SafetyLabel], max_chars: int, drops: dict[str, Counter[str]]
) -> tuple[list[SafetyLabel], list[SafetyLabel]]:
    """Whitespace-normalised labels without empty or over-long ones (counted in ``drops``), deduplicated by
    (question, answer): returns (kept, duplicates) so a caller can count conflicting labels."""
    cleaned: list[SafetyLabel] = []
    for label in labels:
        question, answer = normalize_whitespace(label.question), normalize_whitespace(label.answer)
        if not (question and answer):
            drops[label.source]["empty after whitespace normalisation"] += 1
        elif len(question) + len(answer) > max_chars:
            drops[label.source]["over max_chars"] += 1
        else:
            cleaned.append(label.model_copy(update={"question": question, "answer": answer}))
    return dedupe(cleaned, lambda s: pair_key(s.question, s.answer))


def same_question_pairs(labels: Sequence[SafetyLabel], per_question: int, seed: int) -> list[PreferencePair]:
    """Safe (chosen) vs unsafe (rejected) answers to one question from one source, at most ``per_question``."""
    groups: dict[tuple[str, str], list[SafetyLabel]] = defaultdict(list)
    for label in labels:
        groups[(label.source, question_key(label.question))].append(label)
    pairs: list[PreferencePair] = []
    for (source, _), group in groups.items():
        combos = [(s, u) for s in group if s.is_safe for u in group if not u.is_safe]
        for safe, unsafe in hash_sample(combos, per_question, seed, lambda c: c[0].answer + c[1].answer):
            pairs.append(
                PreferencePair(
                    source=source,
                    prompt=safe.question,
                    chosen=safe.answer,
                    rejected=unsafe.answer,
                    safer="chosen",
                    chosen_is_safe=True,
                    rejected_is_safe=False,
                )
            )
    return pairs


def build_scorer_corpus(config: CorpusConfig, sources: Sources) -> dict[str, Any]:
    """Write the cost scorer's data, split by question like the corrector corpus; return stats.

    ``scorer_{train,validation}.jsonl``: :class:`SafetyLabel` from PKU-SafeRLHF
    mini and Do-Not-Answer's human labels. ``scorer_pairs_{train,validation}.jsonl``:
    :class:`PreferencePair` of a safe (chosen) and an unsafe (rejected) answer to
    the same question from the same source, for the pairwise term of the cost
    loss (Safe RLHF's cost model, Dai et al. 2024), at most
    ``scorer_max_pairs_per_question`` per question."""
    drops: dict[str, Counter[str]] = defaultdict(Counter)
    labels, duplicates = clean_labels([*sources.pku, *sources.do_not_answer], config.max_chars, drops)
    first = {pair_key(s.question, s.answer): s.is_safe for s in labels}
    for dup in duplicates:
        same = first[pair_key(dup.question, dup.answer)] == dup.is_safe
        drops[dup.source]["duplicate (question, answer)" if same else "duplicate with a conflicting label"] += 1

    pairs = same_question_pairs(labels, config.scorer_max_pairs_per_question, config.seed)

    def by_split(items: Sequence[T], question: Callable[[T], str]) -> dict[Split, list[T]]:
        result: dict[Split, list[T]] = {"train": [], "validation": []}
        for item in items:
            result[split_of(question(item), config.validation_fraction, config.seed)].append(item)
        return result

    label_splits = by_split(labels, lambda s: s.question)
    pair_splits = by_split(pairs, lambda p: p.prompt)
    out = Path(config.output_dir)
    for split in ("train", "validation"):
        write_jsonl(out / f"scorer_{split}.jsonl", label_splits[split])
        write_jsonl(out / f"scorer_pairs_{split}.jsonl", pair_splits[split])
    return {
        "files": [f"scorer_{p}{s}.jsonl" for p in ("", "pairs_") for s in ("train", "validation")],
        "labels": {
            split: tally(items, lambda s: (s.source, "safe" if s.is_safe else "unsafe"))
            for split, items in label_splits.items()
        },
        "pairs": {split: dict(Counter(p.source for p in items)) for split, items in pair_splits.items()},
        "dropped": {name: dict(sorted(c.items())) for name, c in sorted(drops.items()) if c},
    }
