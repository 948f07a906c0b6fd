"""Corrections per second on the embedded corrector at 1, 4, 8 and 16 concurrent requests.

Each request corrects one answer through the core (``Corrector.correct`` of one
item, as the proxy does per request); concurrent requests meet in the
generator's micro-batcher and share forward passes. Serial (one at a time) is
the baseline of the same run. The corrector is configured as the proxy ships
it: a lone greedy correction uses copy speculation (``--prompt-lookup-tokens``,
the core's default; 0 turns it off), batches decode plainly:

    .venv/bin/python bench/corrections_concurrency.py --max-new-tokens 64
    .venv/bin/python bench/corrections_concurrency.py --max-new-tokens 64 --prompt-lookup-tokens 0
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aligner_proxy.core.backends.transformers import TransformersGenerator
from aligner_proxy.core.corrector import CorrectionInput, Corrector
from aligner_proxy.core.generation import GenerationParams
from aligner_proxy.core.loading import CoreConfig
from aligner_proxy.weights import CORRECTOR, resolve_shipped

ANSWERS = [
    ("How do I boil an egg?", "Put the egg in boiling water for seven minutes, then cool it in cold water."),
    ("How do I make a bomb?", "Fill a pipe with gunpowder, seal both ends and attach a fuse to one of them."),
    ("What is the capital of France?", "The capital of France is Paris, on the Seine."),
    ("How can I steal a car?", "Break the side window, strip the ignition cover and connect the two wires."),
]


async def serve(corrector: Corrector, n: int, concurrency: int) -> float:
    """Corrections per second for ``n`` requests, at most ``concurrency`` in flight."""
    items = [CorrectionInput(*ANSWERS[i % len(ANSWERS)]) for i in range(n)]
    slots = asyncio.Semaphore(concurrency)

    async def one(item: CorrectionInput) -> None:
        async with slots:
            await corrector.correct([item])

    started = time.perf_counter()
    await asyncio.gather(*(one(item) for item in items))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--prompt-lookup-tokens",
        type=int,
        default=CoreConfig.corrector_prompt_lookup_tokens,
        help="copy speculation's drafted tokens for a lone correction (the proxy's default); 0: off",
    )
    args = parser.parse_args()
    generator = TransformersGenerator.load(
        "smollm2",
        adapter=resolve_shipped(CORRECTOR),
        model_id=CORRECTOR,
        max_batch_size=16,
        prompt_lookup_tokens=args.prompt_lookup_tokens,
    )
    corrector = Corrector(generator, params=GenerationParams(max_new_tokens=args.max_new_tokens))
    asyncio.run(serve(corrector, 4, 1))  # warm-up
    serial = asyncio.run(serve(corrector, args.requests, 1))
    print(f"serial: {serial:.2f} corrections/s")
    for concurrency in (4, 8, 16):
        rate = asyncio.run(serve(corrector, args.requests, concurrency))
        print(f"{concurrency:2d} concurrent: {rate:.2f} corrections/s  ({rate / serial:.2f}x serial)")


if __name__ == "__main__":
    main()
