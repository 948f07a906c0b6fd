"""Secrets out of every message: one place that scrubs URLs and text before they reach a client or a log.

A URL can carry a password (``https://user:pass@host``) or a key in its query
(``?api-key=...``), and an upstream's error message can quote the key it was
sent ("Incorrect API key provided: sk-...abcd"). Every error message built from
a URL or from a remote server's words passes through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"

_SECRET_PARAMS = re.compile(r"key|token|secret|password|passwd|pwd|auth|sig|credential", re.IGNORECASE)

_KEY_LIKE = re.compile(
    r"\b(?:sk|pk|rk|ak|api|key|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9*._\-]{6,}"  # sk-..., hf_..., ghp_...
    r"|\bBearer\s+\S+"
    r"|\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]+",  # a JWT
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` without user info and with the values of secret-looking query parameters replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = urlencode(
        [(k, REDACTED if _SECRET_PARAMS.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="[]",
    )
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets, their tails of four or more characters, and key-like tokens replaced."""
    text = _KEY_LIKE.sub(REDACTED, text)
    for secret in secrets:
        if secret and len(secret) >= 8:
            # The whole key, then the tail a masked echo keeps ("sk-...abcd").
            text = text.replace(secret, REDACTED).replace(secret[-4:], REDACTED)
    return text
