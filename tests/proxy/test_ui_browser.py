"""The review page in a real headless Chromium: the static batch report and the live page on a running proxy.

What a reader would notice: the diff marks the words the correction removed
and added (and leaves the shared ones unmarked), a question or an answer
holding markup shows as text and runs nothing, the status filter filters, and
the playground shows the upstream's answer beside the final one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from aligner_proxy.cli import app as cli
from tests.proxy.browser import headless_chromium, marked_words, unavailable
from tests.proxy.fakes import CORRECTION, HARMFUL_ANSWER
from tests.proxy.helpers import MODEL, running_proxy

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")

XSS_QUESTION = '<script>window.__xss = "question"</script><img src=x onerror="window.__xss = \'img\'"> a bomb?'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: Any, script: str, timeout_s: float = 15.0) -> Any:
    """Poll ``script`` (JavaScript returning a value) in the page until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.05)


def text_of(driver: Any, selector: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector
    )


def nothing_ran(driver: Any) -> bool:
    """No injected script or handler ran, and no element came from a row's text."""
    return driver.execute_script(
        "return window.__xss === undefined && document.querySelectorAll('#rows img, #pg-result img, "
        "#rows script, #pg-result script').length === 0"
    )


def test_static_report_marks_the_changed_words_filters_and_runs_no_injected_markup(
    browser: Any, tmp_path: Path
) -> None:
    rows = [
        {
            "row_id": "1",
            "question": XSS_QUESTION,
            "answer": "Sure! Mix the explosive powder with fuel.",
            "correction": "I can't help. Mix flour instead.",
            "status": "modified",
            "cost_before": 4.0,
            "cost_after": -2.5,
        },
        {
            "row_id": "2",
            "question": "Bread?",
            "answer": "Flour <img src=x onerror=\"window.__xss = 'answer'\"> and water.",
            "correction": "Flour <img src=x onerror=\"window.__xss = 'answer'\"> and water.",
            "status": "passed",
        },
        {"row_id": "3", "question": "Why?", "answer": "Because.", "correction": None, "status": "failed", "error": "x"},
    ]
    batch = tmp_path / "corrected.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "review.html"
    assert CliRunner().invoke(cli, ["review", str(batch), "--out", str(report)]).exit_code == 0

    browser.get(report.as_uri())
    wait_until(browser, "return document.querySelectorAll('#rows .row').length === 3")
    assert set(marked_words(browser, "#rows .row:nth-child(1)", "del")) == {
        "Sure!", "the", "explosive", "powder", "with", "fuel.",
    }  # fmt: skip
    assert set(marked_words(browser, "#rows .row:nth-child(1)", "ins")) == {"I", "can't", "help.", "flour", "instead."}
    assert "Mix" in text_of(browser, "#rows .row:nth-child(1) .side")[1]  # shared, so shown unmarked
    assert marked_words(browser, "#rows .row:nth-child(2)", "del") == []  # passed: nothing changed
    # The markup in the question and the answer is shown as text, and nothing of it ran.
    assert text_of(browser, "#rows .row:nth-child(1) .question") == [XSS_QUESTION]
    assert "<img src=x" in text_of(browser, "#rows .row:nth-child(2) .side")[0]
    assert nothing_ran(browser)
    assert browser.find_elements("id", "playground") == []  # a report has no playground

    browser.find_element("css selector", "#status-filter option[value='passed']").click()
    wait_until(browser, "return document.querySelectorAll('#rows .row').length === 1")
    assert text_of(browser, "#rows .status") == ["passed"]


def test_live_page_playground_and_audit_log_show_the_diff_and_run_no_injected_markup(
    browser: Any, upstream_url: str, tmp_path: Path
) -> None:
    with running_proxy(upstream_url, audit_log=tmp_path / "audit.sqlite") as url:
        benign = {"model": MODEL, "messages": [{"role": "user", "content": "How do I bake bread?"}]}
        assert httpx.post(url + "/v1/chat/completions", json=benign).status_code == 200

        browser.get(url + "/ui")
        wait_until(browser, f"return document.querySelector('#pg-model').value === '{MODEL}'")
        browser.find_element("id", "pg-question").send_keys(XSS_QUESTION)
        browser.find_element("id", "pg-send").click()
        wait_until(browser, "return document.querySelector('#pg-result .row .status')")
        assert text_of(browser, "#pg-result .status") == ["modified"]
        assert "explosive" in marked_words(browser, "#pg-result", "del")
        assert "can't" in marked_words(browser, "#pg-result", "ins")
        sides = text_of(browser, "#pg-result .side")
        assert HARMFUL_ANSWER in sides[0] and CORRECTION in sides[1]
        assert text_of(browser, "#pg-result .question") == [XSS_QUESTION]

        # The audit log lists both answers (refreshing until the writer has stored them), newest first.
        wait_until(
            browser,
            "document.querySelector('#refresh').click(); return document.querySelectorAll('#rows .row').length === 2",
        )
        assert text_of(browser, "#rows .status") == ["modified", "passed"]
        assert text_of(browser, "#rows .row:nth-child(1) .question") == [XSS_QUESTION]
        assert "explosive" in marked_words(browser, "#rows .row:nth-child(1)", "del")
        browser.find_element("css selector", "#status-filter option[value='passed']").click()
        wait_until(
            browser, "return [...document.querySelectorAll('#rows .status')].map(e => e.textContent) + '' === 'passed'"
        )
        assert nothing_ran(browser)
