"""Added latency of the proxy in mode ``off`` over calling the upstream directly.

Both paths hit the same fake OpenAI-compatible upstream on 127.0.0.1 in the
same run, interleaved, so the ratio cancels machine noise. The upstream and
the proxy each run in a process of their own, as they would in production,
so the client's load does not share their interpreter:

    .venv/bin/python bench/overhead.py --requests 300 --concurrency 8

Prints p50 / p99 of each path and their ratios, and the proxy's added
milliseconds. A non-streaming chat request is used; ``--stream`` measures
time-to-last-byte of streamed requests instead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.processes import app_process
from tests.proxy.fakes import fake_upstream_app
from tests.proxy.helpers import MODEL, proxy_app

BODY = {"messages": [{"role": "user", "content": "How do I bake bread?"}]}


async def _timed(client: httpx.AsyncClient, url: str, model: str, stream: bool) -> float:
    body = {**BODY, "model": model, "stream": stream, "aligner": {"mode": "off"}}
    if url.endswith("/up"):
        body.pop("aligner")
        url = url[: -len("/up")]
    start = time.perf_counter()
    if stream:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_bytes():
                pass
    else:
        response = await client.post(url + "/v1/chat/completions", json=body)
    response.raise_for_status()
    return (time.perf_counter() - start) * 1000.0


async def _run(upstream: str, proxy: str, requests: int, concurrency: int, stream: bool) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"direct": [], "proxy": []}
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up, not recorded
            await _timed(client, upstream + "/up", "up-model", stream)
            await _timed(client, proxy, MODEL, stream)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with semaphore:
                # Interleave the two paths so both see the same machine state.
                if i % 2:
                    samples["direct"].append(await _timed(client, upstream + "/up", "up-model", stream))
                else:
                    samples["proxy"].append(await _timed(client, proxy, MODEL, stream))

        await asyncio.gather(*(one(i) for i in range(requests * 2)))
    return samples


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per path")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    with app_process(fake_upstream_app) as (upstream, _), app_process(proxy_app, upstream) as (proxy, _):
        samples = asyncio.run(_run(upstream, proxy, args.requests, args.concurrency, args.stream))
    direct, via = samples["direct"], samples["proxy"]
    print(f"requests per path: {args.requests}, concurrency {args.concurrency}, stream={args.stream}")
    for name, q in (("p50", 50), ("p99", 99)):
        d, p = _pct(direct, q), _pct(via, q)
        print(f"{name}: direct {d:7.2f} ms  proxy(off) {p:7.2f} ms  ratio {p / d:5.2f}x  added {p - d:6.2f} ms")


if __name__ == "__main__":
    main()
