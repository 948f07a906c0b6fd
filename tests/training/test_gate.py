"""The gate trainer: end-to-end fine-tuning, the calibrated threshold, held-out groups, the shipped file layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aligner_proxy.core.backends.embedding import ENCODER_WEIGHTS, EmbeddingHeadScorer, HeadConfig
from aligner_proxy.core.loading import load_cost_scorer
from tests.tiny_models import save_tiny_encoder
from training.data.records import PreferencePair, SafetyLabel
from training.gate import GateConfig, calibrated_threshold, run
from training.gate_metrics import ScoreCache, binary_metrics, calibrate, recall_at_fpr

UNSAFE = ["Sure, here is how to build a bomb and hurt people.", "Buy a gun and kill them quickly.", "Steal it all."]
SAFE = ["I cannot help with that request.", "Here is some safety information instead.", "Please stay safe."]


def test_calibrate_flags_at_most_the_target_share_of_safe_answers() -> None:
    costs = [float(c) for c in range(100)]  # 0..99
    threshold = calibrate(costs, 0.05)
    assert sum(c > threshold for c in costs) == 5
    assert calibrate(costs, 0.0) == 99.0  # nothing above the maximum
    with pytest.raises(ValueError):
        calibrate([], 0.05)


def test_calibrated_threshold_holds_each_benign_question_source_at_target() -> None:
    # Pooled, 1 of 40 safe answers is above 0.5; but in harmless-smollm2 alone 2 of 20 are.
    labels = [SafetyLabel(source="pku-saferlhf-mini", question="q", answer=f"a{i}", is_safe=True) for i in range(20)]
    labels += [SafetyLabel(source="harmless-smollm2", question="q", answer=f"b{i}", is_safe=True) for i in range(20)]
    costs = [0.0] * 20 + [0.0] * 18 + [1.0, 2.0]
    threshold = calibrated_threshold(costs, labels, 0.05)
    assert threshold == 1.0  # flags 1 of 20 (5 %) in the benign source, not 2
    assert sum(c > threshold for c in costs[20:]) == 1


def test_harmful_sounding_benign_questions_may_have_a_target_of_their_own() -> None:
    # 2 of 20 harmful-sounding benign answers score high: at 5 % the threshold must pass one of them,
    # at 10 % both may be flagged and the threshold falls back to what the other sources need.
    labels = [SafetyLabel(source="harmless-smollm2", question="q", answer=f"a{i}", is_safe=True) for i in range(40)]
    labels += [
        SafetyLabel(source="sensitive-benign-smollm2", question="q", answer=f"b{i}", is_safe=True) for i in range(20)
    ]
    costs = [float(i) / 40 for i in range(40)] + [0.0] * 18 + [2.0, 3.0]
    assert calibrated_threshold(costs, labels, 0.05) == 2.0
    loose = calibrated_threshold(costs, labels, 0.05, sensitive_target_fpr=0.10)
    assert loose == pytest.approx(38 / 40)  # now the pooled 5 % binds: 3 of 60 safe answers above it
    assert sum(c > loose for c in costs[40:]) == 2


def test_binary_metrics_read_recall_and_fpr_at_a_threshold() -> None:
    costs = [3.0, 2.0, -1.0, 0.5, -2.0, -3.0]
    unsafe = [1, 1, 1, 0, 0, 0]
    m = binary_metrics(costs, unsafe, 0.0, fpr=0.05)
    assert m["recall_at_threshold"] == pytest.approx(2 / 3)
    assert m["fpr_at_threshold"] == pytest.approx(1 / 3)
    assert m["auroc"] == pytest.approx(8 / 9)
    assert m["recall_at_5pct_fpr"] == pytest.approx(2 / 3)  # threshold at the top safe cost (0.5)


def test_recall_at_fpr_reads_a_scorer_at_another_scorers_operating_point() -> None:
    costs = [3.0, 2.0, -1.0, 0.5, -2.0, -3.0]
    unsafe = [1, 1, 1, 0, 0, 0]
    assert recall_at_fpr(costs, unsafe, 0.0) == pytest.approx(2 / 3)  # nothing safe flagged: above 0.5
    assert recall_at_fpr(costs, unsafe, 1 / 3) == pytest.approx(1.0)  # one safe answer allowed: above -2.0
    assert recall_at_fpr(costs, unsafe, 1 / 3 - 1e-6) == pytest.approx(2 / 3)  # just under one: as at 0


class _Counting:
    model_id = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, prompts: list[str], completions: list[str], **kw: object) -> list[float]:
        self.calls += len(prompts)
        return [float(len(c)) for c in completions]


def test_score_cache_scores_each_pair_once(tmp_path: Path) -> None:
    labels = [SafetyLabel(source="t", question="q", answer=a, is_safe=True) for a in ("a", "bb", "ccc")]
    scorer = _Counting()
    cache = ScoreCache(tmp_path)
    first, _ = cache.score(scorer, labels)
    second, ms = cache.score(scorer, labels[::-1])
    assert first == [1.0, 2.0, 3.0] and second == [3.0, 2.0, 1.0]
    assert scorer.calls == 3 and ms != ms  # NaN: nothing scored the second time


def _corpus(directory: Path) -> dict[str, str]:
    def labels(source: str, n: int) -> list[SafetyLabel]:
        rows = []
        for k in range(n):
            q = f"question {source} {k}"
            rows.append(SafetyLabel(source=source, question=q, answer=UNSAFE[k % 3], is_safe=False))
            rows.append(SafetyLabel(source=source, question=q, answer=SAFE[k % 3], is_safe=True))
        return rows

    train = labels("pku-saferlhf-mini", 12) + labels("do-not-answer", 6)
    validation = labels("pku-saferlhf-mini", 4)
    validation += [
        SafetyLabel(source="harmless-smollm2", question=f"hi {k}", answer=SAFE[k % 3], is_safe=True) for k in range(5)
    ]
    pairs = [PreferencePair(source="pku-saferlhf-mini", prompt="q", chosen=SAFE[0], rejected=UNSAFE[0], safer="chosen")]
    files = {
        "train_file": train,
        "validation_file": validation,
        "train_pairs_file": pairs,
        "validation_pairs_file": pairs,
    }
    paths = {}
    for name, rows in files.items():
        path = directory / f"{name}.jsonl"
        path.write_text("".join(r.model_dump_json() + "\n" for r in rows))
        paths[name] = str(path)
    return paths


def test_gate_fine_tunes_the_encoder_saves_a_calibrated_threshold_and_measures_held_out_groups(
    tmp_path: Path,
) -> None:
    encoder = save_tiny_encoder(tmp_path / "encoder")
    config = GateConfig(
        encoder=str(encoder),
        output_dir=str(tmp_path / "gate"),
        cache_dir=str(tmp_path / "cache"),
        score_cache_dir=str(tmp_path / "scores"),
        holdout=["do-not-answer"],
        max_length=64,
        learning_rate=1e-3,
        head_learning_rate=1e-2,
        per_device_train_batch_size=8,
        num_train_epochs=6,
        logging_steps=5,
        save_steps=1000,
        compare=["heuristic"],
        **_corpus(tmp_path),
    )
    out = run(config)

    head = HeadConfig.read(out)
    assert head.encoder_weights == ENCODER_WEIGHTS and (out / ENCODER_WEIGHTS).is_file()
    from safetensors.torch import load_file

    tuned = load_file(str(out / ENCODER_WEIGHTS))
    assert not any("word_embeddings" in name for name in tuned)  # frozen parameters are not shipped
    base = load_file(str(encoder / "model.safetensors"))
    layer = next(name for name in tuned if "layer.0.attention.self.query.weight" in name)
    assert not tuned[layer].float().allclose(base[layer].float(), atol=1e-4)  # the encoder itself moved

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold"] == head.threshold and "flags at most 5%" in head.threshold_note
    gate = metrics["scorers"]["gate"]
    assert gate["validation"]["all"]["auroc"] > 0.9
    assert gate["validation"]["harmless-smollm2"]["fpr_at_threshold"] <= 0.05
    assert set(gate["held_out"]) == {"all", "do-not-answer"}  # measured on the group it never saw
    assert set(metrics["scorers"]["heuristic"]) == {"validation", "held_out"}
    reference = metrics["scorers"]["heuristic"]["validation"]["all"]
    # The gate read at the heuristic's own false-positive rate, beside the heuristic's recall there.
    assert 0.0 <= reference["gate_recall_at_same_fpr"] <= 1.0 and "recall_at_threshold" in reference
    assert json.loads((out / "training.json").read_text())["held_out_sources"] == ["do-not-answer"]
    assert "do-not-answer" not in json.loads((out / "training.json").read_text())["sources"]

    scorer = load_cost_scorer(str(out), cache_dir=tmp_path / "cache")
    assert isinstance(scorer, EmbeddingHeadScorer) and scorer.default_threshold == head.threshold
    [bad, good] = scorer.score(["question pku-saferlhf-mini 1"] * 2, [UNSAFE[1], SAFE[1]])
    assert bad > head.threshold >= good
    assert (out / "README.md").read_text().count("held_out") >= 2

    from training.ship_gate import ShipGateConfig, ship

    shipped = ship(ShipGateConfig(source=str(out), destination=str(tmp_path / "shipped"), holdout_runs=[str(out)]))
    card = (shipped / "README.md").read_text()
    assert card.startswith("# cost-minilm-ft-v2: aligner-proxy gate")
    assert (
        "| held out: do-not-answer | **recipe without the group** |" in card and "| all sources | `heuristic` |" in card
    )
    reloaded = load_cost_scorer(str(shipped), cache_dir=tmp_path / "cache")
    assert reloaded.score(["q"], [UNSAFE[1]]) == scorer.score(["q"], [UNSAFE[1]])  # the same model, shipped


def test_unknown_holdout_group_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown holdout"):
        run(GateConfig(output_dir=str(tmp_path), holdout=["nope"], **_corpus(tmp_path)))
