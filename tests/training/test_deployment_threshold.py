"""The deployment threshold: a development set the suite and every corpus leave alone, limits per benign group."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.training.fakes import FakeGenerator
from tests.training.test_corpus import TINY_FILES
from training.data.splits import in_eval_bucket, question_key
from training.deployment_threshold import (
    DeploymentThresholdConfig,
    DevItem,
    choose,
    decide,
    development_prompts,
    flag_rates,
    run,
)


def _write_data(folder: Path) -> Path:
    """Enough rows that the evaluation bucket (a tenth, by hash) holds some of every source."""
    folder.mkdir()
    with (folder / "mini.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "label"])
        for i in range(200):
            writer.writerow([f"How do I do risky thing {i}?", f"Here is how to do risky thing {i}.", 1])
            writer.writerow([f"How do I do risky thing {i}?", f"I would not do risky thing {i}.", 0])
            writer.writerow([f"What is safe topic {i}?", f"Safe topic {i} is fine.", 0])  # no unsafe answer
    with (folder / "dna.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "types_of_harm", "question", "A_response", "A_harmful", "B_response", "B_harmful"])
        writer.writerow([0, "Harm", "Tell me a secret", "It is ...", 1, "I can't share that.", 0])
    (folder / "hh.jsonl.gz").write_bytes(b"")
    safety = [
        {"instruction": f"Harm {i}?", "input": "", "output": f"I'm sorry, I can't explain harm {i}."}
        for i in range(150)
    ]
    safety += [{"instruction": f"Culture {i}?", "input": "", "output": f"Culture {i} is rich."} for i in range(150)]
    (folder / "safety.json").write_text(json.dumps(safety))
    benign = [{"instruction": f"Write a poem about cats {i}", "category": None} for i in range(600)]
    (folder / "benign.json").write_text(json.dumps(benign))
    return folder


def _config(tmp_path: Path, **overrides: object) -> DeploymentThresholdConfig:
    data = tmp_path / "data"
    if not data.exists():
        _write_data(data)
    sensitive = tmp_path / "sensitive.jsonl"
    sensitive.write_text(
        "".join(
            json.dumps({"question": f"How do I kill process {i}?", "answer": f"Run kill {i}.", "topic": "unix"}) + "\n"
            for i in range(20)
        )
    )
    values: dict[str, object] = {
        "data_dir": str(data),
        "source_files": TINY_FILES,
        "sensitive_file": [str(sensitive)],
        "exclude_tasks": [],
        "n_benign": 30,
        "model": FakeGenerator.model_id,
        "batch_size": 8,
        "generation_cache": str(tmp_path / "cache.jsonl"),
        "output_file": str(tmp_path / "report.json"),
        "compare": [],
        "scorer": "heuristic",
    }
    return DeploymentThresholdConfig(**{**values, **overrides})  # type: ignore[arg-type]


def test_development_set_is_the_evaluation_bucket_less_the_suites_prompts(tmp_path: Path) -> None:
    config = _config(tmp_path)
    items = development_prompts(config)
    groups = {(x.group, x.source) for x in items}
    assert groups == {
        ("harmful", "pku-saferlhf"),
        ("harmful", "safety-only"),
        ("benign", "harmless"),
        ("sensitive", "sensitive-benign-v3"),
    }
    assert all(in_eval_bucket(x.question) for x in items if x.group != "sensitive")  # no corpus trained on them
    harmful = [x.question for x in items if x.group == "harmful"]
    assert not [q for q in harmful if q.startswith(("What is safe topic", "Culture"))]  # no unsafe label / declines
    assert len([x for x in items if x.group == "benign"]) == 30

    # A task of the suite names some of those prompts: they leave the development set.
    suite = [x.question for x in items if x.group == "benign"][:5]
    (tmp_path / "suite.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in suite))
    task = tmp_path / "suite.yaml"
    task.write_text("name: suite\npath: suite.jsonl\nlabel: benign\nid_field: null\n")
    without = development_prompts(_config(tmp_path, exclude_tasks=[str(task)]))
    keys = {question_key(x.question) for x in without}
    assert not keys & {question_key(q) for q in suite}
    assert len([x for x in without if x.group == "benign"]) == 30  # the sample refills from the rest


def _items(benign: int, sensitive: int, harmful: int) -> list[DevItem]:
    return (
        [DevItem("benign", "harmless", f"b{i}", "fine") for i in range(benign)]
        + [DevItem("sensitive", "s", f"s{i}", "fine") for i in range(sensitive)]
        + [DevItem("harmful", "pku-saferlhf", f"h{i}", "Here is how.") for i in range(harmful)]
    )


def test_the_chosen_threshold_is_the_lowest_that_keeps_each_benign_group_within_its_limit() -> None:
    items = _items(100, 40, 10)
    costs = [i / 100 for i in range(100)] + [0.5 + i / 40 for i in range(40)] + [1.0 + i for i in range(10)]
    config = DeploymentThresholdConfig(benign_max_flag_rate=0.02, sensitive_max_flag_rate=0.05)
    threshold = choose(costs, items, config)
    rates = flag_rates(costs, items, threshold)
    assert rates["benign_flag_rate"] <= 0.02 and rates["sensitive_flag_rate"] <= 0.05
    assert rates["sensitive_flagged"] == 2  # the sensitive limit binds here: 2 of 40
    lower = flag_rates(costs, items, threshold - 1e-6)
    assert lower["benign_flag_rate"] > 0.02 or lower["sensitive_flag_rate"] > 0.05
    assert rates["recall"] == pytest.approx(0.9)  # harmful costs 1..10: nine lie above 1.425


def test_refused_answers_to_harmful_prompts_are_not_counted_as_misses() -> None:
    items = [
        DevItem("harmful", "pku-saferlhf", "h0", "Here is how."),
        DevItem("harmful", "pku", "h1", "I cannot help with that."),
    ]
    assert [x.unsafe for x in items] == [True, False]
    assert flag_rates([1.0, 0.0], items, 0.5)["recall"] == 1.0


def _report(shipped: dict[str, float], chosen: dict[str, float]) -> dict:
    return {"gate": {"shipped": shipped, "chosen": chosen}}


def test_the_rule_lowers_the_threshold_only_for_a_recall_gain_and_raises_it_when_a_limit_breaks() -> None:
    config = DeploymentThresholdConfig(benign_max_flag_rate=0.015, sensitive_max_flag_rate=0.05, min_recall_gain=0.03)
    ok = {"benign_flag_rate": 0.01, "sensitive_flag_rate": 0.03}
    gain = _report({**ok, "threshold": 1.5, "recall": 0.60}, {**ok, "threshold": 1.2, "recall": 0.64})
    assert decide(gain, config)["ship"] is True
    small = _report({**ok, "threshold": 1.5, "recall": 0.60}, {**ok, "threshold": 1.4, "recall": 0.62})
    assert decide(small, config)["ship"] is False
    broken = _report(
        {"benign_flag_rate": 0.04, "sensitive_flag_rate": 0.03, "threshold": 1.0, "recall": 0.7},
        {**ok, "threshold": 1.3, "recall": 0.6},
    )
    assert decide(broken, config)["ship"] is True


def test_run_answers_once_scores_and_writes_the_report(tmp_path: Path) -> None:
    config = _config(tmp_path)
    generator = FakeGenerator()
    report = run(config, generator)
    assert generator.batches  # answered now
    saved = json.loads(Path(config.output_file).read_text())
    assert saved["decision"] == report["decision"] and "ship" in saved["decision"]
    assert saved["counts"]["benign/harmless"] == 30
    assert saved["compliant_harmful"] == sum(n for k, n in saved["counts"].items() if k.startswith("harmful/"))
    for key in ("shipped", "chosen"):
        assert {"threshold", "recall", "benign_flag_rate", "sensitive_flag_rate", "auroc"} <= saved["gate"][key].keys()
    again = FakeGenerator()
    run(config, again)
    assert not again.batches  # every answer came from the cache
