"""The corpus build on tiny data written here, with a fake generator: splits, dedup, cache reuse, limits, files, CLI."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from tests.training.fakes import FakeGenerator
from training.data.corpus import build, main
from training.data.records import CorrectionTriple, PreferencePair, SafetyLabel
from training.data.sources import CorpusConfig
from training.data.splits import pair_key


def write_tiny_data(folder: Path) -> Path:
    folder.mkdir()
    with (folder / "mini.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "label"])
        for i in range(30):
            writer.writerow([f"How do I do risky thing {i}?", f"Here is how to do risky thing {i}.", 1])
            writer.writerow([f"How do I do risky thing {i}?", f"I would not do risky thing {i}; it is dangerous.", 0])
        writer.writerow(["How do I do risky thing 0?", "Here  is how to do risky thing 0.", 1])  # a duplicate
        writer.writerow(["Only safe?", "Fine answer.", 0])
        writer.writerow(["broken row"])
    with (folder / "dna.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "types_of_harm", "question", "A_response", "A_harmful", "B_response", "B_harmful"])
        for i in range(10):
            writer.writerow([i, "Harm", f"Tell me secret {i}", f"Secret {i} is ...", 1, "I can't share that.", 0])
    hh_rows = []
    for i in range(10):
        context = f"\n\nHuman: Help me with bad plan {i}"
        hh_rows.append({"chosen": context + "\n\nAssistant: Please don't.", "rejected": context + "\n\nAssistant: OK."})
    long_context = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: now something bad"
    hh_rows.append({"chosen": long_context + "\n\nAssistant: no", "rejected": long_context + "\n\nAssistant: yes"})
    hh_rows.append({"chosen": "\n\nHuman: tie\n\nAssistant: same", "rejected": "\n\nHuman: tie\n\nAssistant: same"})
    (folder / "hh.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in hh_rows).encode()))
    safety = [{"instruction": f"Harm {i}?", "input": "", "output": f"I won't explain harm {i}."} for i in range(12)]
    (folder / "safety.json").write_text(json.dumps(safety))
    benign = [{"instruction": f"Write a poem about cats {i}", "category": None} for i in range(30)]
    benign += [{"instruction": "Please refuse-me", "category": None}]
    (folder / "benign.json").write_text(json.dumps(benign))
    return folder


TINY_FILES = {
    "pku_mini_file": "mini.csv",
    "do_not_answer_file": "dna.csv",
    "hh_rlhf_file": "hh.jsonl.gz",
    "safety_instructions_file": "safety.json",
    "harmless_instructions_file": "benign.json",
}
"""The file names :func:`write_tiny_data` writes, by CorpusConfig field."""


def tiny_config(data: Path, out: Path, **overrides: object) -> CorpusConfig:
    values: dict[str, object] = {
        "data_dir": str(data),
        "output_dir": str(out),
        **TINY_FILES,
        "n_harmful_generations": 8,
        "n_benign_generations": 31,
        "batch_size": 4,
        "validation_fraction": 0.3,
        "max_tokens": 200,
    }
    return CorpusConfig(**{**values, **overrides})  # type: ignore[arg-type]


def read_jsonl(path: Path, record: type) -> list:
    return [record.model_validate_json(line) for line in path.read_text().splitlines()]


def test_build_end_to_end(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "out"
    generator = FakeGenerator()
    stats = build(tiny_config(data, out), generator)

    train = read_jsonl(out / "train.jsonl", CorrectionTriple)
    validation = read_jsonl(out / "validation.jsonl", CorrectionTriple)
    every = train + validation
    assert train and validation
    assert not {t.question.lower() for t in train} & {t.question.lower() for t in validation}
    assert len({pair_key(t.question, t.answer) for t in every}) == len(every)

    by_kind = {(t.source, t.kind) for t in every}
    assert {
        ("pku-saferlhf-mini", "unsafe_to_safe"),
        ("do-not-answer", "unsafe_to_safe"),
        ("hh-rlhf-harmless-base", "unsafe_to_safe"),
        ("safety-only-smollm2", "upstream"),
        ("harmless-smollm2", "identity"),
    } <= by_kind
    pku = [t for t in every if t.source == "pku-saferlhf-mini" and t.kind == "unsafe_to_safe"]
    assert all(t.answer.startswith("Here is how") and t.correction.startswith("I would not") for t in pku)
    assert len(pku) == 30  # the whitespace-variant duplicate went
    upstream = [t for t in every if t.kind == "upstream"]
    assert all(t.answer == f"<answer to {t.question}>" and t.correction.startswith("I won't") for t in upstream)
    hh = [t for t in every if t.source == "hh-rlhf-harmless-base"]
    assert {(t.answer, t.correction) for t in hh} == {("OK.", "Please don't.")}  # no long dialogue, no tie
    assert all(t.answer == t.correction for t in every if t.kind == "identity")
    assert not any("refuse-me" in t.question for t in every)
    identity_share = sum(t.kind == "identity" for t in every) / len(every)
    assert identity_share == pytest.approx(0.2, abs=0.02)

    smollm2_validation = read_jsonl(out / "validation_smollm2.jsonl", CorrectionTriple)
    assert smollm2_validation == [t for t in validation if t.source in {"safety-only-smollm2", "harmless-smollm2"}]

    labels = read_jsonl(out / "scorer_train.jsonl", SafetyLabel) + read_jsonl(
        out / "scorer_validation.jsonl", SafetyLabel
    )
    assert len(labels) == 61 + 20  # 62 mini rows minus one duplicate, 10 x 2 Do-Not-Answer labels
    pairs_train = read_jsonl(out / "scorer_pairs_train.jsonl", PreferencePair)
    pairs_validation = read_jsonl(out / "scorer_pairs_validation.jsonl", PreferencePair)
    assert len(pairs_train) + len(pairs_validation) == 30 + 10
    assert all(p.safer == "chosen" and p.chosen_is_safe and p.rejected_is_safe is False for p in pairs_train)
    train_questions = {t.question for t in train}
    assert not {p.prompt for p in pairs_validation} & train_questions  # the same split as the corrector corpus

    saved = json.loads((out / "stats.json").read_text())
    assert saved["corrector"]["totals"] == {"train": len(train), "validation": len(validation)}
    assert saved["corrector"]["dropped"]["harmless-smollm2/identity"]["answer is a refusal"] == 1
    assert saved["corrector"]["dropped"]["hh-rlhf-harmless-base/unsafe_to_safe"] == {
        "answer equals correction": 1,
        "more human turns than hh_max_human_turns": 1,
    }
    assert {r["source"]: r["bad"] for r in saved["load_reports"]}["pku-saferlhf-mini"] == {
        "wrong number of csv cells": 1
    }
    assert saved["licences"]["do-not-answer"]["licence"] == "CC BY-NC-SA 4.0"
    card = (out / "data_card.md").read_text()
    assert "CC BY-NC 4.0" in card and "Non-commercial licences carry over" in card
    assert stats["corrector"]["generation"]["generated_this_run"] == 39

    # A second build answers everything from the cache and writes the same corpus.
    again = FakeGenerator()
    build(tiny_config(data, out), again)
    assert again.batches == []
    assert read_jsonl(out / "train.jsonl", CorrectionTriple) == train


def test_token_and_char_limits_drop_long_items(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    stats = build(tiny_config(data, tmp_path / "out", max_tokens=8, scorer=False), FakeGenerator())
    dropped = stats["corrector"]["dropped"]
    assert dropped["pku-saferlhf-mini/unsafe_to_safe"]["over max_tokens"] == 31  # length is checked before dedup
    stats = build(tiny_config(data, tmp_path / "out2", max_chars=40, max_tokens=0, scorer=False), FakeGenerator())
    assert stats["corrector"]["dropped"]["do-not-answer/unsafe_to_safe"]["over max_chars"] == 10


def test_cli_with_yaml_config_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_tiny_data(tmp_path / "data")
    config = tiny_config(data, tmp_path / "out", n_harmful_generations=0, n_benign_generations=0, max_tokens=0)
    path = tmp_path / "corpus.yaml"
    path.write_text(json.dumps({k: v for k, v in vars(config).items() if not k.startswith("__")}))  # JSON is YAML
    assert main(["--config", str(path), "--max_hh_pairs", "3", "--scorer", "false"]) == 0

    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["config"]["max_hh_pairs"] == 3
    assert "scorer" not in stats and not (tmp_path / "out" / "scorer_train.jsonl").exists()
    hh = sum(
        per.get("hh-rlhf-harmless-base", {}).get("unsafe_to_safe", 0) for per in stats["corrector"]["counts"].values()
    )
    assert hh == 3
    assert "wrote" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main(["--config", str(path), "--max_hh_pairs", "many"])


class _TargetGate:
    """Scores corrections mentioning 'harm 5' as unsafe (cost 2 > its threshold 1), everything else safe."""

    model_id = "target-gate"
    default_threshold = 1.0

    def score(self, prompts: list[str], completions: list[str], **kw: object) -> list[float]:
        return [2.0 if "harm 5" in c else 0.0 for c in completions]


def test_v2_options_exclude_the_eval_bucket_add_sensitive_identity_and_keep_only_safe_targets(tmp_path: Path) -> None:
    from training.data.corrector_corpus import build_corrector_corpus
    from training.data.sources import load_sources
    from training.data.splits import in_eval_bucket

    data = write_tiny_data(tmp_path / "data")
    sensitive = tmp_path / "sensitive.jsonl"
    sensitive.write_text(
        "".join(
            json.dumps({"question": f"How do I kill a stuck job {i}?", "answer": f"Cancel job {i}.", "topic": "t"})
            + "\n"
            for i in range(5)
        )
    )
    config = tiny_config(
        data,
        tmp_path / "out",
        exclude_eval_bucket=True,
        sensitive_file=str(sensitive),
        identity_fraction=0.5,
        n_harmful_generations=12,
    )
    stats = build_corrector_corpus(config, load_sources(config), FakeGenerator(), _TargetGate())
    every = read_jsonl(tmp_path / "out" / "train.jsonl", CorrectionTriple) + read_jsonl(
        tmp_path / "out" / "validation.jsonl", CorrectionTriple
    )
    # the shared sources lose their evaluation-bucket questions (the sensitive set's eval half is its own file)
    assert not [t for t in every if in_eval_bucket(t.question) and not t.source.startswith("sensitive-benign")]
    assert {"sensitive-benign", "sensitive-benign-smollm2"} <= {t.source for t in every if t.kind == "identity"}
    assert not any("harm 5" in t.correction for t in every if t.kind != "identity")
    assert stats["dropped"]["safety-only-smollm2/upstream"]["correction above the gate's threshold"] == 1
    assert sum(t.kind == "identity" for t in every) / len(every) == pytest.approx(0.5, abs=0.05)


def test_upstream_triples_only_for_instructions_the_data_set_declines(tmp_path: Path) -> None:
    """A safety-only instruction whose safe output is a helpful answer is a sensitive question, not a harmful
    one: SmolLM2's answer to it is not rewritten into that answer (the corrector would learn to rewrite good
    answers); under ``all`` it is, as the v1/v2 corpora were built."""
    data = write_tiny_data(tmp_path / "data")
    outputs = {f"Harm {i}?": f"I won't explain harm {i}." for i in range(6)}
    outputs |= {f"Latex allergy {i}?": f"Avoid latex gloves {i}." for i in range(6)}
    rows = [{"instruction": q, "input": "", "output": a} for q, a in outputs.items()]
    (data / "safety.json").write_text(json.dumps(rows))
    upstream: dict[str, set[str]] = {}
    for rule in ("declined", "all"):
        out = tmp_path / rule
        build(tiny_config(data, out, n_harmful_generations=12, safety_only_rule=rule), FakeGenerator())
        every = [t for split in ("train", "validation") for t in read_jsonl(out / f"{split}.jsonl", CorrectionTriple)]
        upstream[rule] = {t.question for t in every if t.kind == "upstream"}
    assert upstream["declined"] and not any(q.startswith("Latex") for q in upstream["declined"])
    assert any(q.startswith("Latex") for q in upstream["all"])
    assert upstream["declined"] < upstream["all"]


def test_helpful_safety_only_outputs_become_identity_triples(tmp_path: Path) -> None:
    """``safety_only_helpful_identity``: the data set's helpful answers to its sensitive instructions are kept as
    they are (identity), and its declines still only ever serve as upstream targets."""
    data = write_tiny_data(tmp_path / "data")
    outputs = {f"Harm {i}?": f"I won't explain harm {i}." for i in range(6)}
    outputs |= {f"Latex allergy {i}?": f"Avoid latex gloves {i}." for i in range(6)}
    (data / "safety.json").write_text(
        json.dumps([{"instruction": q, "input": "", "output": a} for q, a in outputs.items()])
    )
    identity: dict[bool, set[str]] = {}
    for flag in (False, True):
        out = tmp_path / str(flag)
        build(
            tiny_config(data, out, n_harmful_generations=12, identity_fraction=0.6, safety_only_helpful_identity=flag),
            FakeGenerator(),
        )
        every = [t for split in ("train", "validation") for t in read_jsonl(out / f"{split}.jsonl", CorrectionTriple)]
        identity[flag] = {t.answer for t in every if t.kind == "identity" and t.source == "safety-only"}
        upstream = {t.correction for t in every if t.kind == "upstream"}
        assert upstream and all(c.startswith("I won't") for c in upstream)
    assert not identity[False]
    assert identity[True] and all(a.startswith("Avoid latex gloves") for a in identity[True])


def test_identity_set_keeps_written_answers_and_the_models_non_refusals(tmp_path: Path) -> None:
    from training.data.identity_set import build_identity_set

    sensitive = tmp_path / "sensitive_v3.jsonl"
    rows = [
        {"question": "How do I kill a zombie process?", "answer": "Reap it from the parent.", "topic": "unix"},
        {"question": "Please refuse-me: shoot a waterfall?", "answer": "Use 1/4 s on a tripod.", "topic": "photo"},
    ]
    sensitive.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "generations.jsonl"
    generator = FakeGenerator()
    triples = build_identity_set([sensitive], generator, cache, batch_size=1)
    assert all(t.kind == "identity" and t.answer == t.correction for t in triples)
    assert {(t.source, t.answer) for t in triples} == {
        ("sensitive-benign", "Reap it from the parent."),
        ("sensitive-benign", "Use 1/4 s on a tripod."),
        ("sensitive-benign-smollm2", "<answer to How do I kill a zombie process?>"),  # the refusal is not kept
    }
    again = FakeGenerator()
    assert build_identity_set([sensitive], again, cache) == triples and not again.batches  # from the cache
