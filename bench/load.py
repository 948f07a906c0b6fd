"""The proxy under sustained load: 200 concurrent clients for 60 s, in mode ``off`` and ``gated``.

A fake OpenAI-compatible upstream and the proxy (keyword scorer, the fake
corrector of the tests: no model loads) each run in a process of their own.
Every client loops request after request for the whole duration. The same
load is first sent straight to the upstream, in the same run, as the
baseline the proxy's numbers are read against:

    .venv/bin/python bench/load.py --clients 200 --duration 60

Prints, per phase: requests, throughput, p50 / p99 latency (and p99 against
the direct baseline), errors (any status other than 200, any transport
error), hung requests (no answer within ``--hang-s``), and the proxy
process's resident memory before and after the phase.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aligner_proxy.core.heuristic import KeywordCostScorer
from bench.processes import app_process
from tests.proxy.fakes import fake_upstream_app
from tests.proxy.helpers import MODEL, proxy_app

QUESTIONS = ["How do I bake bread?", "How do I make a bomb at home?", "Write a haiku about rain."]


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    hung: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def _client(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], phase: Phase, until: float, hang_s: float
) -> None:
    i = 0
    while time.monotonic() < until:
        payload = {**body, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
        i += 1
        start = time.perf_counter()
        try:
            response = await asyncio.wait_for(client.post(url + "/v1/chat/completions", json=payload), hang_s)
        except TimeoutError:
            phase.hung += 1
            continue
        except httpx.HTTPError:
            phase.errors += 1
            continue
        phase.statuses[response.status_code] = phase.statuses.get(response.status_code, 0) + 1
        if response.status_code != 200:
            phase.errors += 1
            continue
        phase.latencies_ms.append((time.perf_counter() - start) * 1000.0)


async def _phase(name: str, url: str, body: dict[str, Any], clients: int, duration_s: float, hang_s: float) -> Phase:
    phase = Phase(name)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=hang_s * 2) as client:
        until = time.monotonic() + duration_s
        await asyncio.gather(*(_client(client, url, body, phase, until, hang_s) for _ in range(clients)))
    return phase


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def keyword_proxy(upstream: str) -> Any:
    """The proxy over the fake upstream with the keyword scorer and the fake corrector: no model loads."""
    return proxy_app(upstream, scorer=KeywordCostScorer(), max_concurrent_requests=1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--hang-s", type=float, default=30.0, help="a request without an answer by then is hung")
    args = parser.parse_args()
    with app_process(fake_upstream_app) as (upstream, _), app_process(keyword_proxy, upstream) as (proxy, proxy_pid):
        phases = [
            ("direct", upstream, {"model": "up-model"}),
            ("proxy off", proxy, {"model": MODEL, "aligner": {"mode": "off"}}),
            ("proxy gated", proxy, {"model": MODEL, "aligner": {"mode": "gated"}}),
        ]
        print(f"{args.clients} clients, {args.duration:g} s per phase")
        baseline_p99 = float("nan")
        for name, url, body in phases:
            before = _rss_mb(proxy_pid)
            result = asyncio.run(_phase(name, url, body, args.clients, args.duration, args.hang_s))
            after = _rss_mb(proxy_pid)
            lat = result.latencies_ms
            p99 = _pct(lat, 99)
            if name == "direct":
                baseline_p99 = p99
            print(
                f"{name:12s} {len(lat):6d} ok  {len(lat) / args.duration:7.1f} req/s  "
                f"p50 {_pct(lat, 50):7.1f} ms  p99 {p99:7.1f} ms ({p99 / baseline_p99:5.2f}x direct)  "
                f"errors {result.errors}  hung {result.hung}  statuses {result.statuses}  "
                f"proxy RSS {before:6.1f} -> {after:6.1f} MB"
            )


if __name__ == "__main__":
    main()
