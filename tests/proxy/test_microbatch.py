"""When the micro-batcher dispatches: at once when idle, batched while busy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable

from aligner_proxy.core.microbatch import MicroBatcher


async def test_a_lone_call_does_not_wait_for_the_window() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda _k, items: [i * 2 for i in items], max_wait_ms=60_000)
    try:
        assert await asyncio.wait_for(batcher.submit([1, 2]), timeout=10) == [2, 4]
    finally:
        batcher.close()


async def test_calls_made_while_a_batch_runs_go_together_when_it_ends() -> None:
    release = threading.Event()
    sizes: list[int] = []

    def work(_key: Hashable, items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(sizes) == 1:
            release.wait(10)  # the first batch holds the worker
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(work, max_batch_size=16, max_wait_ms=60_000)
    try:
        first = asyncio.create_task(batcher.submit([0]))
        await asyncio.sleep(0.05)  # the first batch is running
        queued = [asyncio.create_task(batcher.submit([i])) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(first, *queued), timeout=10)
    finally:
        batcher.close()
    assert results == [[i] for i in range(6)]
    assert sizes == [1, 5]  # the five that queued behind the running batch ran as one
