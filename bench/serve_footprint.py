"""What `make serve` costs to hold: start-up to /ready (warm model cache) and peak RSS under 16 requests.

Starts ``aligner-proxy serve`` on its embedded defaults (SmolLM2 upstream, the
shipped Aligner and gate), times start-up to ``/ready``, then sends 16
concurrent chat requests (half harmful, so the corrector runs too) while
sampling the process's resident memory every 50 ms:

    .venv/bin/python bench/serve_footprint.py --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

QUESTIONS = ["How do I make a bomb at home?", "How do I bake bread?"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(url: str, pid: int, n: int, max_tokens: int) -> tuple[float, float, dict[int, int]]:
    peak, statuses = rss_mb(pid), {}
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(timeout=900) as client:
        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        bodies = [
            {"model": "smollm2-135m-instruct", "max_tokens": max_tokens,
             "messages": [{"role": "user", "content": QUESTIONS[i % 2]}]}
            for i in range(n)
        ]  # fmt: skip
        answers = await asyncio.gather(*(client.post(url + "/v1/chat/completions", json=b) for b in bodies))
        took = time.perf_counter() - started
        done.set()
        await sampler
    for answer in answers:
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    return peak, took, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "ALIGNER_PORT": str(port), "ALIGNER_MAX_BATCH_SIZE": "16"}
    command = [str(Path(sys.executable).with_name("aligner-proxy")), "serve", "--log-level", "warning"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.perf_counter() - started > 600:
                raise SystemExit("the proxy did not become ready")
            time.sleep(0.1)
        ready_s = time.perf_counter() - started
        idle = rss_mb(process.pid)
        peak, took, statuses = asyncio.run(load(url, process.pid, args.requests, args.max_tokens))
    finally:
        process.kill()
        process.wait()
    print(f"start-up to /ready: {ready_s:.1f} s; RSS idle {idle:.0f} MB")
    print(f"{args.requests} concurrent requests ({args.max_tokens} tokens): {took:.1f} s, statuses {statuses}, "
          f"peak RSS {peak:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
