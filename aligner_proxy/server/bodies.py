"""Request bodies decoded with bounds: what the proxy cannot process is a 400, never a 500.

``json.loads`` accepts things nothing downstream can handle: ``NaN`` and
``Infinity`` (and ``1e999``, which becomes infinity), integers of thousands of
digits (Python refuses to convert past 4,300 and raises a ``ValueError``),
nesting deep enough to exhaust the recursion limit, and ``\\ud800`` escapes that
decode to lone surrogates no encoder will write back out. Each is refused here,
once, with a message that names the problem.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aligner_proxy.server.errors import InvalidRequestError
from aligner_proxy.server.settings import Settings

MAX_DEPTH = 32
"""Nesting a request may use; OpenAI's shapes need about six."""

MAX_INT_DIGITS = 64


class _Refused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _parse_constant(name: str) -> float:
    raise _Refused(f"{name} is not a number JSON allows")


def decode_json_object(raw: bytes, *, content_type: str | None = None) -> dict[str, Any]:
    """The body as a JSON object, or :class:`InvalidRequestError` saying why not."""
    if content_type and "json" not in content_type.lower():
        raise InvalidRequestError(f"Content-Type {content_type[:80]!r} is not JSON: send 'application/json'.")
    try:
        data = json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except _Refused as exc:
        raise InvalidRequestError(f"The body is not acceptable JSON: {exc}.") from None
    except RecursionError:
        raise InvalidRequestError(f"The body nests deeper than {MAX_DEPTH} levels.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"The body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The body must be a JSON object.")
    if _may_need_check(raw):
        _check(data)
    return data


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""A surrogate as a JSON escape, or UTF-8-encoded (``json.loads`` decodes bytes with ``surrogatepass``)."""


def _may_need_check(raw: bytes) -> bool:
    """Whether :func:`_check`'s walk can find anything: most bodies hold fewer brackets than ``MAX_DEPTH``
    (so cannot nest deeper) and no surrogate at all, and the walk is a tenth of a small request's CPU.
    UTF-16 and UTF-32 bodies (``json.loads`` takes them too: a byte-order mark, or NULs up front) are
    always walked, since their surrogates are not the bytes searched for."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw[:4]:
        return True
    return raw.count(b"{") + raw.count(b"[") > MAX_DEPTH or _SURROGATE.search(raw) is not None


def _check(data: dict[str, Any]) -> None:
    """Depth and text that cannot be encoded, in one iterative walk (no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequestError(f"The body nests deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                _encodable(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _encodable(value)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            "The body contains a lone UTF-16 surrogate (e.g. '\\ud800'), which is not text."
        ) from None


def check_generation_limits(
    settings: Settings, *, max_tokens: int | None, answers: int, answers_param: str = "n"
) -> None:
    """A 400 for a request that would make the upstream generate more than the operator allows: tokens per
    answer (``max_tokens``), or answers per request (``n``, times the prompts of a completions request).
    Each answer may also be corrected, so the second bound is also the corrector's fan-out."""
    max_tokens_cap, max_answers = settings.max_tokens_cap, settings.max_answers_per_request
    if max_tokens is not None and max_tokens > max_tokens_cap:
        raise InvalidRequestError(
            f"max_tokens {max_tokens} exceeds this proxy's limit of {max_tokens_cap}.", param="max_tokens"
        )
    if answers > max_answers:
        raise InvalidRequestError(
            f"The request asks for {answers} answers; this proxy allows {max_answers} per request.",
            param=answers_param,
        )
