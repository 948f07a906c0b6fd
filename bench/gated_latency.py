"""Mode ``gated`` on benign answers from a slow upstream: what the gate adds to a request's total latency.

A fake OpenAI-compatible upstream answers after ``--delay`` seconds with a
benign answer of a few hundred characters (what a chat model writes); the
proxy runs the shipped gate (``--scorer``, default the proxy's own) on every
answer, so each request pays the scorer once, batched with whatever else is
in flight. Benign answers pass, so no correction runs: the difference is the
gate's cost. Upstream and proxy each run in a process of their own; the same
load is sent straight to the upstream in the same run as the baseline:

    .venv/bin/python bench/gated_latency.py --delay 1.0 --concurrency 1 4 16

Prints, per concurrency: p50 and p90 of the total latency direct and through
the proxy, their ratio, and the share of answers the gate passed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aligner_proxy.weights import COST_SCORER
from bench.processes import app_process
from tests.proxy.fakes import chat_response
from tests.proxy.helpers import MODEL, proxy_app

QUESTIONS_AND_ANSWERS = [
    (
        "How do I keep basil alive on a windowsill?",
        "Basil wants at least six hours of direct sun, so a south-facing window is best. Water when the top "
        "centimetre of soil is dry, and water the soil rather than the leaves. Pinch off the top pair of leaves "
        "above a node every week or two so the plant branches instead of flowering, and remove any flower buds "
        "as soon as they appear. Use a pot with drainage holes; soggy roots are the most common way to lose it.",
    ),
    (
        "Explain what a hash table is.",
        "A hash table stores key-value pairs in an array. A hash function turns each key into an index, so "
        "looking up, inserting or deleting a key takes constant time on average. Two keys can hash to the same "
        "index (a collision); tables resolve that by chaining entries in a list at each slot or by probing for "
        "the next free slot. When the table gets too full, it grows and rehashes every key, which keeps the "
        "average cost low. Python's dict and Java's HashMap are hash tables.",
    ),
    (
        "Write a short thank-you note to a colleague who covered my shift.",
        "Hi Sam, thank you so much for covering my shift on Friday. It meant a lot to be able to be with my "
        "family without worrying about work, and I heard everything went smoothly thanks to you. I owe you one: "
        "let me know whenever you need a swap and I will be glad to return the favour. Thanks again, Alex.",
    ),
    (
        "What causes the seasons on Earth?",
        "The seasons come from the tilt of Earth's axis, about 23.4 degrees relative to its orbit. As Earth "
        "goes around the Sun, first one hemisphere and then the other leans toward the Sun. The hemisphere "
        "tilted toward the Sun gets more direct sunlight and longer days, which is summer; the one tilted away "
        "gets slanted light and short days, which is winter. Distance from the Sun plays almost no part: Earth "
        "is actually closest to the Sun in early January.",
    ),
]


def upstream_app(delay_s: float) -> FastAPI:
    """Answers each question with its benign answer after ``delay_s``, like a model generating for that long."""
    answers = dict(QUESTIONS_AND_ANSWERS)
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        await asyncio.sleep(delay_s)
        response = chat_response(body)
        response["choices"][0]["message"]["content"] = answers[body["messages"][-1]["content"]]
        return response

    return app


def gated_proxy(upstream: str, scorer: str, dtype: str) -> Any:
    """The proxy over ``upstream``: the gate ``scorer`` in ``dtype`` (loaded in the child), the fake corrector."""
    from aligner_proxy.core.loading import load_cost_scorer

    return proxy_app(upstream, scorer=load_cost_scorer(scorer, dtype=dtype), max_concurrent_requests=1024)


async def _load(url: str, model: str, concurrency: int, requests: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    statuses: list[str] = []
    queue = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in queue:
            question = QUESTIONS_AND_ANSWERS[i % len(QUESTIONS_AND_ANSWERS)][0]
            body = {"model": model, "messages": [{"role": "user", "content": question}]}
            start = time.perf_counter()
            response = await client.post(url + "/v1/chat/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)
            statuses.append(response.headers.get("x-aligner-status", "-"))

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=1.0, help="the upstream's answer time, seconds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=4, help="requests per client at each concurrency")
    parser.add_argument("--scorer", default=COST_SCORER, help="the gate (a name load_cost_scorer takes)")
    parser.add_argument(
        "--scorer-dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="as ALIGNER_SCORER_DTYPE"
    )
    args = parser.parse_args()
    # spawn: the proxy loads torch, and a threaded parent must not fork
    with (
        app_process(upstream_app, args.delay, start_method="spawn") as (upstream, _),
        app_process(gated_proxy, upstream, args.scorer, args.scorer_dtype, start_method="spawn", timeout_s=300.0) as (
            proxy,
            _,
        ),
    ):
        asyncio.run(_load(proxy, MODEL, 2, 4))  # warm the scorer and the connections
        print(
            f"upstream answers in {args.delay:g} s; gate {args.scorer} ({args.scorer_dtype}); "
            f"{args.rounds} requests per client"
        )
        header = ("clients", "direct p50", "proxy p50", "ratio", "direct p90", "proxy p90")
        print("{:>7} {:>10} {:>9} {:>6} {:>10} {:>9}  passed".format(*header))
        for concurrency in args.concurrency:
            n = concurrency * args.rounds
            direct, _ = asyncio.run(_load(upstream, "up-model", concurrency, n))
            proxied, statuses = asyncio.run(_load(proxy, MODEL, concurrency, n))
            d50, p50 = statistics.median(direct), statistics.median(proxied)
            d90, p90 = (statistics.quantiles(x, n=10, method="inclusive")[8] for x in (direct, proxied))
            passed = statuses.count("passed") / len(statuses)
            print(
                f"{concurrency:7d} {d50 * 1000:8.0f}ms {p50 * 1000:7.0f}ms {p50 / d50:5.3f}× "
                f"{d90 * 1000:8.0f}ms {p90 * 1000:7.0f}ms  {passed:.0%}"
            )


if __name__ == "__main__":
    main()
