"""The answer cache survives a torn write and keys on content, not on order or names."""

from __future__ import annotations

from pathlib import Path

from evals.cache import JsonlCache, cache_key


def test_cache_round_trips_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = JsonlCache(path)
    cache.put("k1", {"answer": "one"})
    cache.put("k2", {"answer": "two"})
    cache.put("k1", {"answer": "one, again"})
    with path.open("a") as handle:
        handle.write('{"key": "k3", "value": {"ans')  # a run killed mid-write
    reread = JsonlCache(path)
    assert len(reread) == 2
    assert reread.get("k1") == {"answer": "one, again"}
    assert reread.get("k3") is None
    assert (reread.hits, reread.misses) == (1, 1)


def test_cache_key_ignores_dict_order_but_not_content() -> None:
    a = cache_key("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    b = cache_key("chat", {"messages": [{"content": "hi", "role": "user"}], "model": "m"})
    assert a == b
    assert a != cache_key("chat", {"model": "m", "messages": [{"role": "user", "content": "hi!"}]})
    assert a != cache_key("judge", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_memory_only_cache_writes_nothing(tmp_path: Path) -> None:
    cache = JsonlCache(None)
    cache.put("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    assert list(tmp_path.iterdir()) == []
