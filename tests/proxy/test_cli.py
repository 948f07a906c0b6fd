"""`aligner-proxy correct` / `score` on JSONL with tiny models, and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aligner_proxy.cli import app

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_correct_and_score_write_every_row(tiny_lm_dir: Path, tiny_classifier_dir: Path, tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"id": i, "q": f"question {i}?", "a": f"answer {i}."} for i in range(3)]
    source = write_jsonl(tmp_path / "in.jsonl", [*rows, {"id": 3, "q": "no answer"}])
    env = {"ALIGNER_CACHE_DIR": str(tmp_path), "ALIGNER_CORRECTOR_MAX_NEW_TOKENS": "6"}

    def correct(out: Path) -> str:
        result = runner.invoke(
            app,
            [
                "correct",
                "--in",
                str(source),
                "--out",
                str(out),
                "--question-field",
                "q",
                "--answer-field",
                "a",
                "--id-field",
                "id",
                "--corrector",
                str(tiny_lm_dir),
                "--scorer",
                str(tiny_classifier_dir),
            ],
            env=env,
        )
        assert result.exit_code == 0, result.output
        return result.output

    out = tmp_path / "out.jsonl"
    assert "done 3, skipped 0, failed 1" in correct(out)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == [0, 1, 2, 3] and [r["row_id"] for r in written] == ["0", "1", "2", "3"]
    good = written[:3]
    assert all(isinstance(r["cost_before"], float) and isinstance(r["cost_after"], float) for r in good)
    # always mode keeps the correction; one the scorer still finds unsafe (cost > 0 here) is flagged, not "fixed"
    assert all(r["status"] == ("flagged" if r["cost_after"] > 0 else "modified") for r in good)
    assert all(r["corrector"] == str(tiny_lm_dir) and r["error"] is None for r in good)
    assert written[3]["status"] == "failed" and "'a' missing" in written[3]["error"]

    before = out.read_bytes()
    assert "done 0, skipped 4, failed 0" in correct(out)  # a re-run finds everything done
    assert out.read_bytes() == before
    twin = tmp_path / "twin.jsonl"
    correct(twin)
    assert twin.read_bytes() == before  # greedy decoding: the same command writes the same bytes

    scored = tmp_path / "scored.jsonl"
    result = runner.invoke(
        app,
        [
            "score",
            "--in",
            str(write_jsonl(tmp_path / "score.jsonl", rows)),
            "--out",
            str(scored),
            "--prompt-field",
            "q",
            "--completion-field",
            "a",
            "--scorer",
            "heuristic",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    costs = [json.loads(line)["cost"] for line in scored.read_text().splitlines()]
    assert len(costs) == 3 and all(cost < 0 for cost in costs)  # benign rows score as safe


def test_bad_input_gets_a_clear_message_not_a_trace(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "a"}\n{oops\n')
    result = runner.invoke(app, ["score", "--in", str(broken), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert "broken.jsonl:2: not valid JSON" in result.output and "Traceback" not in result.output

    missing = write_jsonl(tmp_path / "missing.jsonl", [{"question": "q"}])
    result = runner.invoke(app, ["score", "--in", str(missing), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "field 'answer' missing" in result.output

    result = runner.invoke(
        app, ["correct", "--in", str(missing), "--out", str(tmp_path / "o.jsonl"), "--mode", "sometimes"]
    )
    assert result.exit_code == 2 and "--mode" in result.output
