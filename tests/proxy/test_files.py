"""aligner_proxy.core.files on files written here: strict JSONL, atomic writes, rows of every input format."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from aligner_proxy.core.files import (
    FileFormatError,
    RecordSource,
    iter_jsonl,
    open_text,
    read_jsonl_models,
    write_jsonl,
)

ROWS = [{"question": f"q{i}", "answer": f"ä{i}"} for i in range(3)]


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    answer: str


def test_open_text_drops_a_bom_and_reads_gzip(tmp_path: Path) -> None:
    plain, packed = tmp_path / "a.csv", tmp_path / "a.csv.gz"
    plain.write_bytes("\ufeffquestion,answer\n".encode())
    packed.write_bytes(gzip.compress("\ufeffquestion,answer\n".encode()))
    for path in (plain, packed):
        with open_text(path) as handle:
            assert handle.read() == "question,answer\n"


def test_iter_jsonl_numbers_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n   \n[2]\n"three"\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, [2]), (5, "three")]


def test_iter_jsonl_names_the_file_and_line_of_bad_json_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(FileFormatError, match=r"broken\.jsonl:3: not valid JSON \(Expecting value\)") as caught:
        list(iter_jsonl(path))
    assert caught.value.line == 3 and caught.value.path == path

    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"a": "caf\xe9"}\n')
    with pytest.raises(FileFormatError, match=r"latin\.jsonl: not valid UTF-8"):
        list(iter_jsonl(latin))


def test_read_jsonl_models_validates_each_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert read_jsonl_models(path, Item) == [Item(**r) for r in ROWS]

    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(FileFormatError, match=r"items\.jsonl:2: not a valid Item \(answer: Field required\)"):
        read_jsonl_models(path, Item)
    path.write_text("{oops\n")
    with pytest.raises(FileFormatError, match=r"items\.jsonl:1: not a valid Item"):
        read_jsonl_models(path, Item)


def test_write_jsonl_round_trips_models_and_mappings(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "out.jsonl"
    assert write_jsonl(path, [Item(**ROWS[0]), ROWS[1]]) == 2
    assert path.read_text(encoding="utf-8").splitlines()[1] == '{"question": "q1", "answer": "ä1"}'  # text kept
    assert read_jsonl_models(path, Item) == [Item(**ROWS[0]), Item(**ROWS[1])]


def test_write_jsonl_that_fails_midway_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, ROWS)

    def rows_then_crash():  # type: ignore[no-untyped-def]
        yield {"question": "new", "answer": "new"}
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows_then_crash())
    assert [row for _, row in iter_jsonl(path)] == ROWS
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left behind


def _write_every_format(directory: Path) -> list[str]:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir()
    lines = "".join(json.dumps(r) + "\n" for r in ROWS)
    (directory / "in.jsonl").write_text(lines)
    (directory / "in.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (directory / "list.json").write_text(json.dumps(ROWS))
    (directory / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    (directory / "lines.json").write_text(lines)  # JSON lines under a .json name
    csv_text = "\ufeffquestion,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in ROWS)
    (directory / "in.csv").write_text(csv_text)
    pq.write_table(pa.Table.from_pylist(ROWS), directory / "in.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(directory / "saved"))
    return ["in.jsonl", "in.jsonl.gz", "list.json", "wrapped.json", "lines.json", "in.csv", "in.parquet", "saved"]


def test_every_format_reads_the_same_rows_with_their_places(tmp_path: Path) -> None:
    names = _write_every_format(tmp_path / "d")
    for name in names:
        source = RecordSource(tmp_path / "d" / name)
        rows = list(source)
        assert [r.data for r in rows] == ROWS and all(r.problem is None for r in rows), name
        assert [r.data for r in source] == ROWS, f"{name} read a second time"
    assert [r.where for r in RecordSource(tmp_path / "d" / "in.jsonl")] == ["in.jsonl:1", "in.jsonl:2", "in.jsonl:3"]
    assert [r.where for r in RecordSource(tmp_path / "d" / "in.csv")] == ["in.csv:2", "in.csv:3", "in.csv:4"]
    assert [r.where for r in RecordSource(tmp_path / "d" / "list.json")][2] == "list.json[2]"
    assert [r.where for r in RecordSource(tmp_path / "d" / "saved")][1] == "saved[1]"
    one = tmp_path / "one.json"
    one.write_text(json.dumps(ROWS[0]))
    assert [r.data for r in RecordSource(one)] == [ROWS[0]]  # a lone object is one row


def test_a_directory_of_data_files_is_read_file_by_file_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    (folder / "nested").mkdir(parents=True)
    (folder / "b.jsonl").write_text(json.dumps(ROWS[1]) + "\n")
    (folder / "nested" / "c.csv").write_text("question,answer\nq2,ä2\n")
    (folder / "a.json").write_text(json.dumps([ROWS[0]]))
    (folder / "notes.txt").write_text("not data")
    assert [r.data for r in RecordSource(folder)] == ROWS


def test_unreadable_rows_come_out_as_problems_and_reading_goes_on(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"question": "q"}\n{"question": \n["a list"]\n')
    first, bad, listed = RecordSource(jsonl)
    assert first.data == {"question": "q"} and listed.data == ["a list"] and listed.problem is None
    assert (bad.where, bad.problem, bad.message, bad.raw) == (
        "in.jsonl:2",
        "json",
        "not valid JSON (Expecting value)",
        '{"question": ',
    )

    table = tmp_path / "in.csv"
    table.write_text("question,answer\nq1,a1\nq2\nq3,a3,extra\n")
    rows = list(RecordSource(table))
    assert [r.problem for r in rows] == [None, "csv_cells", "csv_cells"]
    assert rows[1].message == "wrong number of CSV cells" and rows[1].data == {"question": "q2", "answer": None}
    assert rows[1].where == "in.csv:3"

    scalar = tmp_path / "scalar.json"
    scalar.write_text("42")
    [row] = RecordSource(scalar)
    assert (row.problem, row.message, row.raw) == ("not_rows", "expected a JSON list of rows", "42")


def test_a_source_that_cannot_be_read_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file, directory or Hub dataset id"):
        RecordSource(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError):
        RecordSource("./not/here")
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type 'notes\.txt'"):
        RecordSource(notes)
