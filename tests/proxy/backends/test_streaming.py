"""Stop strings on streamed text (aligner_proxy/core/backends/streaming.py)."""

from __future__ import annotations

from aligner_proxy.core.backends.streaming import StopScanner


def test_stop_scanner_never_emits_part_of_a_stop_string() -> None:
    scanner = StopScanner(["END", "STOP"])
    out = [scanner.feed(d) for d in ["Hel", "lo E", "N", "d S", "TO", "P later"]]
    assert "".join(out) == "Hello ENd "
    assert scanner.stopped and scanner.flush() == ""
    scanner = StopScanner(["END"])
    assert scanner.feed("abc E") == "abc " and scanner.flush() == "E"
