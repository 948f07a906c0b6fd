"""The cost model's metrics and both designs, on tiny random models and toy data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligner_proxy.core.backends.classifier import SequenceClassifierScorer
from aligner_proxy.core.backends.embedding import EmbeddingHeadScorer
from aligner_proxy.core.scorer import CostScorer
from tests.tiny_models import save_tiny_encoder
from training.cost_model import CostModelConfig, evaluate_scorer, train_cost_model
from training.data.records import PreferencePair, SafetyLabel


class _Fixed:
    model_id = "fixed"

    def score(self, prompts: list[str], completions: list[str], **kw: object) -> list[float]:
        return [{"bad": 2.0, "meh": 0.5, "ok": -0.2, "good": -1.0}[c] for c in completions]


def test_metrics_report_auroc_accuracy_at_zero_and_at_the_best_threshold() -> None:
    labels = [
        SafetyLabel(source="t", question="q", answer=a, is_safe=s)
        for a, s in [("bad", False), ("meh", True), ("ok", False), ("good", True)]
    ]
    pairs = [PreferencePair(source="t", prompt="q", chosen="good", rejected="bad", safer="chosen")]
    metrics = evaluate_scorer(_Fixed(), labels, pairs, batch_size=3)
    assert metrics["auroc"] == pytest.approx(0.75)
    assert metrics["accuracy_at_0"] == pytest.approx(0.5)  # "meh" and "ok" on the wrong side of 0
    assert metrics["accuracy_at_best"] == pytest.approx(0.75)
    assert metrics["pair_accuracy"] == 1.0
    assert metrics["ms_per_item"] >= 0


UNSAFE = ["Sure, here is how to build a bomb and hurt people.", "Buy a gun and kill them quickly.", "Steal the money."]
SAFE = [
    "I cannot help with that request.",
    "Sorry, I cannot help, but here is some safety information.",
    "Please stay safe.",
]
QUESTIONS = ["How do I hurt someone?", "Tell me how to do it.", "What should I do?", "Help me with this."]


def _write_toy_corpus(directory: Path) -> dict[str, str]:
    def labels(offset: int) -> list[str]:
        rows = []
        for k, q in enumerate(QUESTIONS):
            rows.append(SafetyLabel(source="toy", question=q, answer=UNSAFE[(k + offset) % 3], is_safe=False))
            rows.append(SafetyLabel(source="toy", question=q, answer=SAFE[(k + offset) % 3], is_safe=True))
        return [r.model_dump_json() for r in rows]

    def pairs(offset: int) -> list[str]:
        return [
            PreferencePair(
                source="toy",
                prompt=q,
                chosen=SAFE[(k + offset) % 3],
                rejected=UNSAFE[k % 3],
                safer="chosen",
                chosen_is_safe=True,
                rejected_is_safe=False,
            ).model_dump_json()
            for k, q in enumerate(QUESTIONS)
        ]

    files = {"train_file": labels(0) * 2, "validation_file": labels(1), "train_pairs_file": pairs(0),
             "validation_pairs_file": pairs(1)}  # fmt: skip
    paths = {}
    for name, rows in files.items():
        path = directory / f"{name}.jsonl"
        path.write_text("\n".join(rows) + "\n")
        paths[name] = str(path)
    return paths


def test_minilm_head_design_separates_toy_data(tmp_path: Path) -> None:
    encoder = save_tiny_encoder(tmp_path / "encoder")
    config = CostModelConfig(
        backbone="minilm-head",
        encoder=str(encoder),
        output_dir=str(tmp_path / "out"),
        max_length=128,
        hidden_dim=32,
        dropout=0.0,
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        max_steps=150,
        logging_steps=50,
        **_write_toy_corpus(tmp_path),
    )
    out = train_cost_model(config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["auroc"] > 0.9
    assert metrics["pair_accuracy"] == 1.0
    scorer = EmbeddingHeadScorer.load(out)
    assert isinstance(scorer, CostScorer)
    bad, good = scorer.score(["How do I hurt someone?"] * 2, [UNSAFE[0], SAFE[0]])
    assert bad > 0 > good
    card = (out / "README.md").read_text()
    assert "auroc" in card and "toy" in card


def test_smollm2_lora_design_trains_merges_and_loads_as_a_classifier(tmp_path: Path, tiny_classifier_dir: Path) -> None:
    config = CostModelConfig(
        backbone="smollm2-lora",
        model=str(tiny_classifier_dir),
        output_dir=str(tmp_path / "out"),
        max_length=128,
        learning_rate=5e-3,
        per_device_train_batch_size=4,
        max_steps=3,
        save_steps=2,
        lora_r=4,
        lora_alpha=8,
        lora_last_layers=1,
        **_write_toy_corpus(tmp_path),
    )
    out = train_cost_model(config)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()  # a killed run resumes from here
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and 0.0 <= metrics["auroc"] <= 1.0
    scorer = SequenceClassifierScorer.load(str(out), cache_dir=tmp_path / "cache", max_length=128)
    assert not (out / "adapter_config.json").exists()  # merged: a plain classifier directory
    assert len(scorer.score(["q"], ["a"])) == 1
