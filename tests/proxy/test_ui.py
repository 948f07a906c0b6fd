"""The review page without a browser: when ``/ui`` is served, its keys, its audit API, and the static report's
embedding (the browser tests in ``test_ui_browser.py`` check what a reader sees)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from aligner_proxy.cli import app as cli
from aligner_proxy.review.page import ReviewRow, embed_json, render_report
from aligner_proxy.server.settings import Settings
from tests.proxy.helpers import running_proxy


@pytest.mark.parametrize(
    ("host", "ui", "served"),
    [
        ("127.0.0.1", None, True),
        ("localhost", None, True),
        ("::1", None, True),
        ("0.0.0.0", None, False),
        ("10.1.2.3", None, False),
        ("0.0.0.0", True, True),
        ("127.0.0.1", False, False),
    ],
)
def test_ui_is_on_by_default_only_on_a_loopback_bind(host: str, ui: bool | None, served: bool) -> None:
    assert Settings(host=host, ui=ui).ui_enabled() is served


def test_the_page_is_served_with_its_policy_and_absent_when_off(upstream_url: str) -> None:
    with running_proxy(upstream_url) as url:
        page = httpx.get(url + "/ui", follow_redirects=True)
        assert page.status_code == 200 and "review.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(url + "/ui/review.js").headers["content-type"].startswith("text/javascript")
        off = httpx.get(url + "/ui/api/audit").json()
        assert off == {"enabled": False, "rows": []}
    with running_proxy(upstream_url, host="0.0.0.0") as url:  # the bind address the settings name; served here anyway
        assert httpx.get(url + "/ui/").status_code == 404
        assert httpx.get(url + "/ui/api/audit").status_code == 404


def test_the_audit_api_is_behind_the_keys_and_checks_its_filter(upstream_url: str, tmp_path: Path) -> None:
    with running_proxy(upstream_url, api_keys=["sk-ui-test"], audit_log=tmp_path / "a.sqlite") as url:
        assert httpx.get(url + "/ui/").status_code == 200  # the page itself holds no data
        denied = httpx.get(url + "/ui/api/audit")
        assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
        key = {"authorization": "Bearer sk-ui-test"}
        assert httpx.get(url + "/ui/api/audit", headers=key).json() == {"enabled": True, "rows": []}
        bad = httpx.get(url + "/ui/api/audit?status=nonsense", headers=key)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


def test_embedded_rows_cannot_close_their_script_element() -> None:
    hostile = "</script><script>alert(1)</script> & <!-- \u2028"
    row = ReviewRow(question=hostile, original=hostile, final="ok", status="modified")
    html = render_report([row], title="</title><script>x()</script>")
    data = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', html, re.S)
    assert data is not None
    assert "<" not in data.group(1) and ">" not in data.group(1) and "&" not in data.group(1)
    assert json.loads(data.group(1))["rows"][0]["question"] == hostile  # the text survives, as text
    assert json.loads(embed_json("<&>")) == "<&>"
    assert html.count("</script>") == 2  # the data element and the page's own script: nothing from the rows


def test_review_cli_reads_a_batch_output_and_says_what_is_wrong(tmp_path: Path) -> None:
    batch = tmp_path / "corrected.jsonl"
    rows = [
        {"row_id": "a", "question": "q?", "answer": "bad answer", "correction": "good answer", "status": "modified"},
        {
            "row_id": "b",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "correction": None,
            "status": "failed",
            "error": "timeout",
        },
    ]
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "review.html"
    done = CliRunner().invoke(cli, ["review", str(batch), "--out", str(out)])
    assert done.exit_code == 0, done.output
    data = re.search(r'id="review-data">(.*?)</script>', out.read_text(), re.S)
    assert data is not None
    shown = json.loads(data.group(1))["rows"]
    assert [(r["question"], r["original"], r["final"], r["status"]) for r in shown] == [
        ("q?", "bad answer", "good answer", "modified"),
        ("hi", "hello", "hello", "failed"),
    ]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    wrong = CliRunner().invoke(cli, ["review", str(plain), "--out", str(out)])
    assert wrong.exit_code == 2 and "aligner-proxy correct" in wrong.output
    missing = CliRunner().invoke(cli, ["review", str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert missing.exit_code == 2 and "no such file" in missing.output
