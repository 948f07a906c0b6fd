"""Text keys, the split by question and dedup: deterministic, case- and whitespace-blind."""

from __future__ import annotations

from training.data.records import CorrectionTriple
from training.data.splits import dedupe, normalize_whitespace, pair_key, split_of


def test_normalize_whitespace() -> None:
    assert normalize_whitespace("  a \t b\r\n\r\n\r\n\nc  \n d\u00a0e ") == "a b\n\nc\nd e"


def test_split_is_by_question_deterministic_and_case_blind() -> None:
    questions = [f"Question number {i}?" for i in range(2000)]
    splits = [split_of(q, 0.1) for q in questions]
    assert splits == [split_of(q, 0.1) for q in questions]
    assert 120 < splits.count("validation") < 280
    assert all(split_of(f"  {q.upper()}  ", 0.1) == s for q, s in zip(questions, splits, strict=True))
    assert {split_of(q, 0.0) for q in questions} == {"train"}
    assert [split_of(q, 0.1, seed=1) for q in questions] != splits


def test_dedupe_by_normalised_question_and_answer() -> None:
    triples = [
        CorrectionTriple(source="a", question="How?", answer="Bad  answer", correction="x"),
        CorrectionTriple(source="b", question="  how? ", answer="Bad answer", correction="y"),
        CorrectionTriple(source="c", question="How?", answer="Other answer", correction="z"),
    ]
    kept, duplicates = dedupe(triples, lambda t: pair_key(t.question, t.answer))
    assert [t.source for t in kept] == ["a", "c"]
    assert [t.source for t in duplicates] == ["b"]
