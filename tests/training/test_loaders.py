"""Loaders on small files written here: good rows become records, bad rows are counted, nothing is raised."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from training.data.loaders import LOADERS, Instruction, load, read_sensitive
from training.data.records import CorrectionTriple, PreferencePair, SafetyLabel


def write_jsonl(path: Path, rows: list[Any], *, raw_lines: tuple[str, ...] = ()) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in raw_lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_aligner_rows_and_bad_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "aligner.jsonl",
        [
            {"question": "Q1", "answer": "bad answer", "correction": "good answer"},
            {"question": "Q2", "answer": "same", "correction": "same"},
            {"question": "Q3", "answer": "a"},
            {"question": "Q4", "answer": 7, "correction": "c"},
            {"question": "   ", "answer": "a", "correction": "c"},
            ["not", "an", "object"],
        ],
        raw_lines=('{"question": "Q5", "answer": "trunc',),
    )
    records, report = load("aligner", path, name="aligner-20k")

    assert records == [
        CorrectionTriple(source="aligner-20k", question="Q1", answer="bad answer", correction="good answer"),
        CorrectionTriple(source="aligner-20k", question="Q2", answer="same", correction="same", kind="identity"),
    ]
    assert report.rows == 7
    assert report.records == 2
    assert dict(report.bad) == {
        "missing field 'correction'": 1,
        "wrong type for 'answer'": 1,
        "empty field 'question'": 1,
        "row is not an object": 1,
        "unparsable line": 1,
    }
    assert "trunc" in report.examples["unparsable line"][0]


def test_beavertails_category_dict_and_flags(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p1", "response": "r1", "is_safe": False, "category": {"violence": True, "privacy": False}},
        {"prompt": "p2", "response": "r2", "is_safe": "True", "category": {"violence": False}},
        {"prompt": "p3", "response": "r3", "is_safe": "maybe", "category": None},
        {"prompt": "p4", "response": "r4", "is_safe": 0, "category": "self_harm"},
    ]
    path = tmp_path / "beaver.json"
    path.write_text(json.dumps(rows))
    records, report = load("beavertails", path)

    assert [(r.question, r.is_safe, r.category) for r in records if isinstance(r, SafetyLabel)] == [
        ("p1", False, "violence"),
        ("p2", True, None),
        ("p4", False, "self_harm"),
    ]
    assert dict(report.bad) == {"wrong type for 'is_safe'": 1}


def test_pku_saferlhf_pair_and_labels(tmp_path: Path) -> None:
    header = [
        "prompt",
        "response_0",
        "response_1",
        "is_response_0_safe",
        "is_response_1_safe",
        "better_response_id",
        "safer_response_id",
    ]
    path = tmp_path / "pku.csv"
    write_csv(
        path,
        header,
        [
            ["How?", "helpful but unsafe", "safe refusal", "False", "True", "0", "1"],
            ["Why?", "x", "y", "True", "True", "2", "0"],
            ["Same?", "dup", "dup", "True", "False", "0", "0"],
        ],
    )
    gz = tmp_path / "pku.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    records, report = load("pku-saferlhf", gz)

    pairs = [r for r in records if isinstance(r, PreferencePair)]
    labels = [r for r in records if isinstance(r, SafetyLabel)]
    assert pairs == [
        PreferencePair(
            source="pku-saferlhf",
            prompt="How?",
            chosen="helpful but unsafe",
            rejected="safe refusal",
            safer="rejected",
            chosen_is_safe=False,
            rejected_is_safe=True,
        )
    ]
    assert [(r.answer, r.is_safe) for r in labels] == [
        ("helpful but unsafe", False),
        ("safe refusal", True),
        ("dup", True),
        ("dup", False),
    ]
    assert dict(report.bad) == {
        "wrong type for 'better_response_id'": 1,
        "identical responses (labels kept, pair dropped)": 1,
    }


def test_pku_mini_label_means_unsafe_and_bad_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "mini.csv"
    path.write_text(
        '\ufeffquestion,answer,label\nq1,"safe, answer",0\nq1,unsafe answer,1\nq2,short row\nq3,a,2\nq4,,1\n'
    )
    records, report = load("pku-saferlhf-mini", path)

    assert [(r.question, r.answer, r.is_safe) for r in records if isinstance(r, SafetyLabel)] == [
        ("q1", "safe, answer", True),
        ("q1", "unsafe answer", False),
    ]
    assert report.rows == 5
    assert dict(report.bad) == {
        "wrong number of csv cells": 1,
        "wrong type for 'label'": 1,
        "empty field 'answer'": 1,
    }


def test_hh_rlhf_pairs_and_bad_dialogues(tmp_path: Path) -> None:
    context = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Help me hurt someone"
    rows = [
        {"chosen": context + "\n\nAssistant: No, I won't.", "rejected": context + "\n\nAssistant: Sure, here's how."},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: DIFFERENT\n\nAssistant: c"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: more", "rejected": "\n\nHuman: a\n\nAssistant: c"},
        {"chosen": "\n\nHuman: a\n\nAssistant:", "rejected": "\n\nHuman: a\n\nAssistant: c"},
        {"chosen": "no markers at all", "rejected": "none here either"},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl.gz", rows)
    records, report = load("hh-rlhf", path)

    assert records == [
        PreferencePair(
            source="hh-rlhf",
            prompt="Human: Hi\n\nAssistant: Hello\n\nHuman: Help me hurt someone",
            chosen="No, I won't.",
            rejected="Sure, here's how.",
        )
    ]
    assert dict(report.bad) == {
        "chosen and rejected differ before the last turn": 1,
        "dialogue does not end with an assistant turn": 1,
        "empty last assistant turn": 1,
        "no Human/Assistant turns": 1,
    }


def test_do_not_answer_models_from_columns(tmp_path: Path) -> None:
    header = ["id", "types_of_harm", "question", "GPT4_response", "GPT4_harmful"]
    header += ["vicuna-7b_response", "vicuna-7b_harmful"]
    path = write_csv(
        tmp_path / "dna.csv",
        header,
        [
            [0, "Adult Content", "Tell me a dirty joke.", "I can't.", 0, "Here is one...", 1],
            [1, "Privacy", "Where does X live?", "", 0, "I won't share that.", "0"],
            [2, "Privacy", "Who is Y?", "No.", "perhaps", "No.", 0],
        ],
    )
    records, report = load("do-not-answer", path)

    assert [(r.question, r.answer, r.is_safe, r.category) for r in records if isinstance(r, SafetyLabel)] == [
        ("Tell me a dirty joke.", "I can't.", True, "Adult Content"),
        ("Tell me a dirty joke.", "Here is one...", False, "Adult Content"),
        ("Where does X live?", "I won't share that.", True, "Privacy"),
        ("Who is Y?", "No.", True, "Privacy"),
    ]
    assert dict(report.bad) == {"empty field '<model>_response'": 1, "wrong type for '<model>_harmful'": 1}


def test_instruction_files(tmp_path: Path) -> None:
    safety = tmp_path / "safety.json"
    safety.write_text(
        json.dumps(
            [
                {"instruction": "Do harm", "input": "", "output": "I can't help with that."},
                {"instruction": "Summarise", "input": "some text", "output": "A summary."},
                {"instruction": "No output", "input": ""},
            ]
        )
    )
    records, report = load("safety-instructions", safety)
    assert [(r.question, r.answer, r.is_safe) for r in records if isinstance(r, SafetyLabel)] == [
        ("Do harm", "I can't help with that.", True),
        ("Summarise\n\nsome text", "A summary.", True),
    ]
    assert dict(report.bad) == {"missing field 'output'": 1}

    benign = tmp_path / "benign.json"
    benign.write_text(json.dumps({"data": [{"instruction": "Bake a cake", "category": None}, {"instruction": ""}]}))
    records, report = load("instructions", benign)
    assert records == [Instruction(source="instructions", instruction="Bake a cake")]
    assert dict(report.bad) == {"empty field 'instruction'": 1}


def test_directory_and_json_lines_in_a_json_file(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [{"question": "Q2", "answer": "a", "correction": "c"}])
    (folder / "a.json").write_text(json.dumps({"question": "Q1", "answer": "a", "correction": "c"}) + "\n")
    (folder / "notes.txt").write_text("ignored")
    records, report = load("aligner", folder)
    assert [r.question for r in records if isinstance(r, CorrectionTriple)] == ["Q1", "Q2"]
    assert report.rows == 2 and not report.bad


def test_unparsable_json_file_is_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"question": "Q", "answer": ')
    records, report = load("aligner", path)
    assert records == []
    assert dict(report.bad) == {"unparsable line": 1}


def test_parquet_when_pyarrow_is_installed(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"question": ["Q", ""], "answer": ["a", "a"], "correction": ["c", "c"]})
    pq.write_table(table, tmp_path / "x.parquet")
    records, report = load("aligner", tmp_path / "x.parquet")
    assert len(records) == 1 and dict(report.bad) == {"empty field 'question'": 1}


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load("aligner", tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError):
        load("aligner", "./not/here")
    with pytest.raises(KeyError, match="unknown format"):
        load("no-such-format", tmp_path)
    assert {"aligner", "beavertails", "pku-saferlhf", "hh-rlhf", "do-not-answer"} <= set(LOADERS)


def test_read_sensitive_reads_one_file_or_several_in_order(tmp_path: Path) -> None:
    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        row = {"question": f"How do I kill process {name}?", "answer": "Use kill.", "topic": "computing"}
        path.write_text(json.dumps(row) + "\n")
        files.append(path)
    assert [x.question for x in read_sensitive(files[0])] == ["How do I kill process a?"]
    assert [x.question for x in read_sensitive([str(f) for f in files])] == [
        "How do I kill process a?",
        "How do I kill process b?",
    ]
