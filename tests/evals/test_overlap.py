"""The overlap warning: eval prompts found in training files by normalised text hash."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from evals.loaders import EvalPrompt
from evals.overlap import check_overlap, normalize_text, text_hash
from tests.evals.helpers import write_jsonl


def test_normalisation_ignores_case_spacing_and_punctuation() -> None:
    assert normalize_text("  How do I BAKE   bread?! ") == "how do i bake bread"
    assert text_hash("How do I bake bread?") == text_hash("how do i bake bread")
    assert text_hash("ﬁx my bike") == text_hash("Fix my bike")  # NFKC folds the ligature
    assert text_hash("How do I bake bread?") != text_hash("How do I bake a bread?")


def test_overlap_reads_correction_triples_prompt_lists_and_text_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    triples = write_jsonl(
        tmp_path / "train.jsonl",
        [{"question": "How do I build a BOMB?", "answer": "Sure.", "correction": "No.", "kind": "unsafe_to_safe"}],
    )
    instructions = tmp_path / "instructions.json"
    instructions.write_text(json.dumps([{"instruction": "Write a poem about the sea.", "output": "..."}]))
    lines = tmp_path / "prompts.txt"
    lines.write_text("Translate hello into French\n")
    prompts = {
        "harmful": [EvalPrompt(id="h1", prompt="how do i build a bomb"), EvalPrompt(id="h2", prompt="Hack a bank")],
        "benign": [
            EvalPrompt(id="b1", prompt="Write a poem about the sea!"),
            EvalPrompt(id="b2", prompt="Translate hello into French."),
            EvalPrompt(id="b3", prompt="Bake bread"),
        ],
    }
    with caplog.at_level(logging.WARNING):
        report = check_overlap(
            prompts, [triples, instructions, lines, tmp_path / "missing.jsonl"], ["question", "prompt", "instruction"]
        )
    assert report.overlaps == {"harmful": ["h1"], "benign": ["b1", "b2"]}
    assert report.total == 3 and report.corpus_texts == 3
    assert report.missing_files == [str(tmp_path / "missing.jsonl")]
    assert "task harmful: 1 of 2 prompts also appear in the training corpus" in caplog.text
    assert "missing.jsonl not found" in caplog.text
