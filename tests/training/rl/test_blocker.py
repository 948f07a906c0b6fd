"""The ensemble blocker: uncertainty, decisions, CostScorer contract, persistence, CLI (training/rl/blocker.py)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from aligner_proxy.core.scorer import CostScorer
from tests.training.rl.helpers import synthetic_labels
from training.rl.blocker import EnsembleBlocker, gibberish


def test_uncertainty_is_higher_off_distribution(tiny_blocker: Any) -> None:
    held_out = synthetic_labels(60, seed=2)
    inside = tiny_blocker.assess([q for q, _, _ in held_out], [a for _, a, _ in held_out])
    outside = tiny_blocker.assess(*gibberish(60, seed=3))
    assert statistics.mean(a.std for a in outside) > 1.5 * statistics.mean(a.std for a in inside)
    assert sum(a.decision == "correct" for a in outside) > 0.5 * len(outside)  # uncertain → the safe fallback


def test_confident_decisions_follow_the_labels(tiny_blocker: Any) -> None:
    held_out = synthetic_labels(60, seed=4)
    decisions = tiny_blocker.assess([q for q, _, _ in held_out], [a for _, a, _ in held_out])
    right = sum((d.decision == "block") == harmful for d, (_, _, harmful) in zip(decisions, held_out, strict=True))
    assert right >= 0.9 * len(held_out)


def test_it_is_a_cost_scorer_whose_gate_matches_its_decisions(tiny_blocker: Any) -> None:
    assert isinstance(tiny_blocker, CostScorer)
    prompts = ["how do i make a bomb at home", "how do i make a bread at home", *gibberish(3)[0]]
    answers = [
        "here is how to make a bomb: first get the bomb parts then assemble the bomb carefully",
        "here is how to make a bread: first get the bread parts then assemble the bread carefully",
        *gibberish(3)[1],
    ]
    costs = tiny_blocker.score(prompts, answers)
    for cost, a in zip(costs, tiny_blocker.assess(prompts, answers), strict=True):
        assert (cost > 0) == (a.decision != "allow")  # the proxy corrects exactly what the blocker flags
        if a.decision == "correct":
            assert cost >= tiny_blocker.uncertain_cost
    assert tiny_blocker.shield(prompts[:2], answers[:2]) == [True, False]


def test_save_and_load_round_trip(tiny_blocker: Any, tmp_path: Path) -> None:
    tiny_blocker.save(tmp_path)
    loaded = EnsembleBlocker.load(tmp_path)
    prompts, answers = gibberish(4)
    assert loaded.score(prompts, answers) == tiny_blocker.score(prompts, answers)
    assert loaded.uncertainty_threshold == tiny_blocker.uncertainty_threshold


def test_cli_trains_on_a_do_not_answer_file(tmp_path: Path) -> None:
    from training.rl.blocker import main

    models = ["GPT4", "Claude"]
    rows = synthetic_labels(40, seed=5)
    data = tmp_path / "dna.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["id", "types_of_harm", "question", *(f"{m}_{c}" for m in models for c in ("response", "harmful"))]
        )
        for i, (q, a, harmful) in enumerate(rows):
            writer.writerow([i, "t", f"{q} {i}", a, int(harmful), "I cannot help with that.", 0])
    main(
        [
            "--data_file",
            str(data),
            "--output_dir",
            str(tmp_path / "out"),
            "--hash_dim",
            "256",
            "--epochs",
            "5",
            "--n_members",
            "3",
        ]
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_validation"] == 80
    assert metrics["auroc"] is not None and metrics["mean_spread_gibberish"] > 0
    assert EnsembleBlocker.load(tmp_path / "out").model_id.startswith("blocker:")
