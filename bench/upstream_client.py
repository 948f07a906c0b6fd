"""The proxy's outbound HTTP client alone: httpx's own pool against httpx on aiohttp's transport.

In mode ``off`` most of the proxy's CPU per request goes to the outbound call
(profile in docs/benchmarks.md), so the client is the next thing to choose on
numbers. Both clients come from :func:`aligner_proxy.core.http.make_client`
with the same limits and timeouts; only ``transport`` differs. A fake
OpenAI-compatible upstream runs in its own process; this process only sends.
Each round runs every client once, in turn, and the table reports the median
round, so a noisy neighbour hurts both alike:

    .venv/bin/python bench/upstream_client.py --requests 3000 --concurrency 16 --rounds 3

Prints, per client: requests/s, p50 latency and this process's CPU time per
request, and each against httpx's as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aligner_proxy.core.http import make_client
from aligner_proxy.core.transport import make_transport
from bench.processes import app_process
from tests.proxy.fakes import fake_upstream_app

BODY = {"model": "up-model", "messages": [{"role": "user", "content": "How do I bake bread?"}], "max_tokens": 32}


async def _run(kind: str, url: str, requests: int, concurrency: int) -> tuple[float, float, float]:
    client = make_client(
        url, timeout_s=30.0, max_connections=concurrency, transport=make_transport(kind, max_connections=concurrency)
    )
    latencies: list[float] = []
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            start = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=BODY)
            response.raise_for_status()
            response.json()
            latencies.append(time.perf_counter() - start)

    async with client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool
        queue = iter(range(requests))
        latencies.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return requests / wall, statistics.median(latencies) * 1000.0, cpu / requests * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    kinds = ["httpx", "aiohttp"]
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    with app_process(fake_upstream_app) as (upstream, _):
        for _ in range(args.rounds):
            for kind in kinds:
                results[kind].append(asyncio.run(_run(kind, upstream, args.requests, args.concurrency)))
    print(f"{args.requests} requests at concurrency {args.concurrency}, median of {args.rounds} rounds")
    base = [statistics.median(x[i] for x in results["httpx"]) for i in range(3)]
    print(f"{'client':<8} {'req/s':>8} {'p50 ms':>8} {'CPU ms/req':>11}   vs httpx: req/s  p50  CPU")
    for kind in kinds:
        rps, p50, cpu = (statistics.median(x[i] for x in results[kind]) for i in range(3))
        print(
            f"{kind:<8} {rps:8.0f} {p50:8.2f} {cpu:11.3f}   "
            f"{rps / base[0]:13.2f}× {p50 / base[1]:4.2f}× {cpu / base[2]:4.2f}×"
        )


if __name__ == "__main__":
    main()
