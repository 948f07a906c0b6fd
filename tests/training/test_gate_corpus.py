"""The gate corpus on tiny data written here, with a fake generator: labels, pairs, groups, the evaluation bucket."""

from __future__ import annotations

import json
from pathlib import Path

from tests.training.fakes import FakeGenerator
from tests.training.test_corpus import TINY_FILES, write_tiny_data
from training.data.gate_corpus import GROUPS, GateCorpusConfig, build
from training.data.records import PreferencePair, SafetyLabel
from training.data.sources import SafetyOnlyRule
from training.data.splits import in_eval_bucket, question_key


def _read(path: Path, record: type) -> list:
    return [record.model_validate_json(line) for line in path.read_text().splitlines()]


def test_gate_corpus_labels_every_source_and_keeps_the_evaluation_bucket_out(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    sensitive = tmp_path / "sensitive.jsonl"
    sensitive.write_text(
        "".join(
            json.dumps({"question": f"How do I kill process {i}?", "answer": f"Run kill {i}.", "topic": "computing"})
            + "\n"
            for i in range(6)
        )
    )
    out = tmp_path / "out"
    config = GateCorpusConfig(
        data_dir=str(data),
        output_dir=str(out),
        sensitive_file=str(sensitive),
        generation_cache=str(tmp_path / "cache.jsonl"),
        source_files=TINY_FILES,
        model=FakeGenerator.model_id,  # the cache is keyed by the generator's id
        n_harmful_generations=12,
        n_pku_generations=50,
        n_benign_generations=31,
        batch_size=4,
        validation_fraction=0.3,
    )
    generator = FakeGenerator()
    stats = build(config, generator)

    train = _read(out / "gate_train.jsonl", SafetyLabel)
    validation = _read(out / "gate_validation.jsonl", SafetyLabel)
    labels = train + validation
    assert not {question_key(x.question) for x in train} & {question_key(x.question) for x in validation}
    assert not any(in_eval_bucket(x.question) for x in labels)  # no evaluation-bucket question is ever trained on
    dropped = stats["dropped"]
    assert sum(v.get("question in the evaluation bucket", 0) for v in dropped.values()) > 0

    by_source = {x.source for x in labels}
    assert {"pku-saferlhf-mini", "do-not-answer", "safety-only", "safety-only-smollm2", "harmless-smollm2"} <= by_source
    assert {"sensitive-benign", "sensitive-benign-smollm2"} <= by_source
    smol = [x for x in labels if x.source == "safety-only-smollm2"]
    assert smol and all(x.is_safe is False and x.answer.startswith("<answer to") for x in smol)  # complied: unsafe
    assert all(x.model == "fake-lm" for x in smol)
    assert all(x.is_safe for x in labels if x.source in ("harmless-smollm2", "sensitive-benign", "safety-only"))
    assert not any("refuse-me" in x.answer for x in labels)
    dna = [x for x in labels if x.source == "do-not-answer"]
    assert {x.model for x in dna} <= {"A", "B"} and dna

    pairs = _read(out / "gate_pairs_train.jsonl", PreferencePair) + _read(
        out / "gate_pairs_validation.jsonl", PreferencePair
    )
    kinds = {p.source for p in pairs}
    assert {"pku-saferlhf-mini", "safety-only-smollm2", "hh-rlhf-harmless-base"} <= kinds
    assert all(p.safer == "chosen" for p in pairs)
    smol_pairs = [p for p in pairs if p.source == "safety-only-smollm2"]
    assert all(p.rejected.startswith("<answer to") and p.chosen.startswith("I won't") for p in smol_pairs)

    # SmolLM2 answers PKU questions that people labelled an answer to unsafe, and only those.
    pku = [x for x in labels if x.source == "pku-saferlhf-mini"]
    harmful_pku = {question_key(x.question) for x in pku if not x.is_safe}
    smol_pku = [x for x in labels if x.source == "pku-saferlhf-smollm2"]
    assert smol_pku and {question_key(x.question) for x in smol_pku} <= harmful_pku
    assert all(x.is_safe is False for x in smol_pku)  # the fake complies with everything
    safe_pku = {(question_key(x.question), x.answer) for x in pku if x.is_safe}
    pku_pairs = [p for p in pairs if p.source == "pku-saferlhf-smollm2"]
    assert pku_pairs and all((question_key(p.prompt), p.chosen) in safe_pku for p in pku_pairs)

    assert set(GROUPS["smollm2"]) >= {"safety-only-smollm2", "pku-saferlhf-smollm2", "harmless-smollm2"}
    card = (out / "data_card.md").read_text()
    assert "refusal judge" in card and "Held-out groups" in card and "Apache-2.0" in card

    # Cached answers only, no model: the same corpus.
    again = build(config, generate=False)
    assert _read(out / "gate_train.jsonl", SafetyLabel) == train and again["labels"] == stats["labels"]


def test_safety_only_instructions_the_data_set_answers_helpfully_are_not_harmful(tmp_path: Path) -> None:
    """Under ``declined`` SmolLM2's answers to sensitive instructions (helpful safe output) go unlabelled;
    under ``all`` (the v1-v4 corpora's rule) they are trained as unsafe, as they were."""
    data = write_tiny_data(tmp_path / "data")
    outputs = {f"Harm {i}?": f"I won't explain harm {i}." for i in range(6)}
    outputs |= {f"Rob store {i}?": f"No, robbing store {i} is a crime." for i in range(6)}
    outputs |= {f"Irish culture {i}?": f"Irish culture {i} has music." for i in range(6)}
    rows = [{"instruction": q, "input": "", "output": a} for q, a in outputs.items()]
    (data / "safety.json").write_text(json.dumps(rows))
    kept = [r for r in rows if not in_eval_bucket(r["instruction"])]
    helpful = [r["instruction"] for r in kept if r["instruction"].startswith("Irish")]
    assert helpful and len(helpful) < len(kept)
    smol: dict[str, set[str]] = {}
    rules: tuple[SafetyOnlyRule, ...] = ("declined", "all")
    for rule in rules:
        out = tmp_path / rule
        config = GateCorpusConfig(
            data_dir=str(data),
            output_dir=str(out),
            generation_cache=str(tmp_path / "cache.jsonl"),
            source_files=TINY_FILES,
            model=FakeGenerator.model_id,
            n_harmful_generations=18,
            n_benign_generations=4,
            safety_only_rule=rule,
            validation_fraction=0.3,
        )
        stats = build(config, FakeGenerator())
        labels = _read(out / "gate_train.jsonl", SafetyLabel) + _read(out / "gate_validation.jsonl", SafetyLabel)
        smol[rule] = {x.question for x in labels if x.source == "safety-only-smollm2" and not x.is_safe}
        # The data set's own safe outputs stay safe examples under both rules, the helpful ones included.
        assert sum(x.source == "safety-only" and x.is_safe for x in labels) == len(kept)
        if rule == "declined":
            assert stats["dropped"]["safety-only-smollm2"] == {
                "safe output answers the instruction (sensitive, not harmful): upstream answer unlabelled": len(helpful)
            }
            assert "left unlabelled" in (out / "data_card.md").read_text()
    assert smol["declined"] == {r["instruction"] for r in kept} - set(helpful)
    assert smol["all"] == {r["instruction"] for r in kept}
