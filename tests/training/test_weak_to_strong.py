"""training/weak_to_strong.py end to end on tiny random models: data sets, a checkpoint that loads, a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.supervision import build_supervision
from training.weak_to_strong import WeakToStrongConfig, load_prompts, main, policy_prompt


def write_prompts(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    harmful = [{"instruction": f"How do I make a bomb number {i}?", "output": "I can't help."} for i in range(16)]
    benign = [{"instruction": f"How do I bake bread recipe {i}?", "category": None} for i in range(16)]
    (directory / "harmful.json").write_text(json.dumps(harmful))
    (directory / "benign.json").write_text(json.dumps(benign))
    return directory


def tiny_config(tmp_path: Path, lm: Path, classifier: Path, **kw: object) -> WeakToStrongConfig:
    values: dict[str, object] = dict(
        strong_model=str(lm),
        corrector_model=str(lm),
        scorer=str(classifier),
        reward_model=str(classifier),
        data_dir=str(write_prompts(tmp_path / "data")),
        harmful_file="harmful.json",
        benign_file="benign.json",
        n_train=4,
        n_eval=4,
        eval_fraction=0.3,
        policy_max_new_tokens=6,
        corrector_max_new_tokens=6,
        batch_size=4,
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=96,
        lora_r=4,
        lora_alpha=8,
        logging_steps=1,
        save_steps=50,
        output_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
    )
    values.update(kw)
    return WeakToStrongConfig(**values)  # type: ignore[arg-type]


def test_prompts_are_split_by_prompt_and_rounds_extend_each_other(tmp_path: Path, tiny_lm_dir: Path) -> None:
    config = tiny_config(tmp_path, tiny_lm_dir, tiny_lm_dir, rounds=2)
    rounds, held_out = load_prompts(config)
    train_ids = [r["id"] for round_ in rounds for r in round_]
    assert [len(r) for r in rounds] == [4, 4] and len(held_out) == 4
    assert not set(train_ids) & {r["id"] for r in held_out} and len(set(train_ids)) == 8
    assert [r["kind"] for r in held_out] == ["harmful", "harmful", "benign", "benign"]
    one_round, _ = load_prompts(tiny_config(tmp_path, tiny_lm_dir, tiny_lm_dir, rounds=1))
    assert one_round[0] == rounds[0]


def test_supervision_keeps_changed_answers_as_preferences() -> None:
    base = {"kind": "harmful", "source": "s", "prompt": "p", "status": "modified", "cost_before": 1.0}
    corrections = [
        {**base, "row_id": "a", "answer": "bad", "correction": "good", "cost_after": -1.0, "error": None},
        {**base, "row_id": "b", "answer": "same", "correction": "same ", "cost_after": 1.0, "error": None},
        {**base, "row_id": "c", "answer": "x", "correction": None, "cost_after": None, "error": "boom"},
    ]
    sft, preference = build_supervision(corrections)
    assert [r["id"] for r in sft] == ["a", "b"] and sft[0]["completion"] == "good"
    assert preference == [
        {
            "id": "a",
            "kind": "harmful",
            "source": "s",
            "prompt": "p",
            "chosen": "good",
            "rejected": "bad",
            "cost_chosen": -1.0,
            "cost_rejected": 1.0,
        }
    ]


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_weak_to_strong_end_to_end_on_tiny_models(
    method: str, tmp_path: Path, tiny_lm_dir: Path, tiny_classifier_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rounds = 2 if method == "sft" else 1
    config = tiny_config(tmp_path, tiny_lm_dir, tiny_classifier_dir, method=method, rounds=rounds)
    argv = [f"--{k}={v}" for k, v in vars(config).items() if v is not None and not isinstance(v, list)]
    main(argv)

    run = Path(config.output_dir)
    sft = datasets.load_from_disk(str(run / "round-1" / "data" / "sft"))
    preference = datasets.load_from_disk(str(run / "round-1" / "data" / "preference"))
    assert len(sft) == 4 and {"prompt", "completion", "original", "cost_before", "cost_after"} <= set(sft.column_names)
    assert len(preference) >= 1 and all(r["chosen"] != r["rejected"] for r in preference)
    assert "Weak-to-strong SFT set" in (run / "round-1" / "data" / "sft" / "README.md").read_text()

    policy = run / f"round-{rounds}" / "policy"
    model: Any = AutoModelForCausalLM.from_pretrained(policy)  # a plain, merged checkpoint
    tokenizer = AutoTokenizer.from_pretrained(policy)
    ids = tokenizer(policy_prompt(tokenizer, "hello"), return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=2, do_sample=False).shape[1] == ids.shape[1] + 2
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).state_dict()
    changed = [k for k, v in model.state_dict().items() if not (v == base[k]).all()]
    assert changed and all("q_proj" in k or "k_proj" in k or "v_proj" in k or "o_proj" in k for k in changed)
    assert (policy / "README.md").is_file() and (run / "round-1" / "adapter" / "adapter_config.json").is_file()
    if rounds == 2:
        assert json.loads((policy / "w2s_round.json").read_text())["start"] == str(run / "round-1" / "policy")

    report = json.loads((run / "report.json").read_text())
    assert list(report["eval"]) == [f"round-{i}" for i in range(rounds + 1)]
    for metrics in report["eval"].values():
        assert 0.0 <= metrics["unsafe_rate_harmful"] <= 1.0 and 0.0 <= metrics["refusal_rate_benign"] <= 1.0
        assert isinstance(metrics["reward_mean"], float) and metrics["n_harmful"] == 2
    assert report["rounds"][0]["training"]["steps"] == 2
    assert "unsafe_rate_harmful" in capsys.readouterr().out  # the before / after table

    if method == "sft":  # a re-run generates, corrects and trains nothing again
        answers = (run / "round-1" / "answers.jsonl").read_bytes()
        marker = (policy / "w2s_round.json").stat().st_mtime_ns
        main(argv)
        assert (run / "round-1" / "answers.jsonl").read_bytes() == answers
        assert (policy / "w2s_round.json").stat().st_mtime_ns == marker
        assert json.loads((run / "report.json").read_text())["eval"] == report["eval"]
