"""The review page's files, and :func:`render_report`: the page with its rows, script and style inlined.

The report must open from disk in any browser, with nothing to fetch, and
must not let a row's text become markup: the rows go in a
``<script type="application/json">`` element (never executed, parsed with
``JSON.parse``) with every ``<``, ``>`` and ``&`` escaped as ``\\u003c``...,
so no text can close the element. A Content-Security-Policy admits only the
page's own inline script and style, by hash, as a second line of defence.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict

STATIC = Path(__file__).with_name("static")
ASSETS = {"review.html": "text/html", "review.js": "text/javascript", "review.css": "text/css"}

_STYLE_TAG = '<link rel="stylesheet" href="/ui/review.css">'
_SCRIPT_TAG = '<script src="/ui/review.js"></script>'


class ReviewRow(BaseModel):
    """What the page shows of one answer: an audit-log row, a batch output row, or a playground answer."""

    model_config = ConfigDict(extra="ignore")

    question: str
    original: str
    final: str
    status: str
    cost_before: float | None = None
    cost_after: float | None = None
    threshold: float | None = None
    id: int | str | None = None
    time: float | None = None
    model: str | None = None
    request_id: str | None = None
    total_ms: float | None = None
    error: str | None = None


@cache
def asset(name: str) -> str:
    """One of the page's files (read once; they ship with the package)."""
    if name not in ASSETS:
        raise KeyError(name)
    return (STATIC / name).read_text(encoding="utf-8")


def embed_json(value: object) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left in it."""
    text = json.dumps(value, ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def render_report(rows: list[ReviewRow], *, title: str) -> str:
    """The review page with ``rows`` embedded and its script and style inline: one file, nothing to fetch."""
    page, script, style = asset("review.html"), asset("review.js"), asset("review.css")
    if "</script" in script.lower() or "</style" in style.lower():
        raise ValueError("the page's script or style contains a closing tag and cannot be inlined")
    data = embed_json({"title": title, "rows": [row.model_dump(mode="json") for row in rows]})
    policy = (
        f"default-src 'none'; script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    head = f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n<style>{style}</style>'
    body = f'<script type="application/json" id="review-data">{data}</script>\n<script>{script}</script>'
    if _STYLE_TAG not in page or _SCRIPT_TAG not in page:
        raise ValueError("review.html no longer links review.css and review.js as render_report expects")
    return page.replace(_STYLE_TAG, head).replace(_SCRIPT_TAG, body)


LIVE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The live page's Content-Security-Policy: its own files and its own API, nothing else."""
