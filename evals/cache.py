"""An append-only JSONL cache of answers and judge verdicts, keyed by a hash of the request.

A key covers everything that decides an answer (URL, model, messages, body
fields, aligner options, the target's ``cache_salt``) and nothing that does not
(the target's display name), so a re-run with one more target generates only
that target's answers, and renaming a target costs nothing. Records are
appended and flushed one by one: a run killed half-way keeps what it had, and a
torn last line is skipped on the next read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def cache_key(kind: str, payload: Any) -> str:
    """A stable hash of ``payload`` (JSON with sorted keys), namespaced by ``kind``."""
    text = json.dumps({"kind": kind, "payload": payload}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class JsonlCache:
    """``key → JSON object``; the last record of a key wins. ``path=None`` keeps it in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._items: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0
        if path is not None and path.is_file():
            self._read(path)

    def _read(self, path: Path) -> None:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self._items[record["key"]] = record["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning("%s:%d: unreadable cache record skipped", path, number)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._items[key] = value
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
