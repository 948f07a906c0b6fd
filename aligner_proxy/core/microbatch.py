"""Micro-batching of blocking model calls made from async code.

Model work must never run on the event loop, and a CPU model is several times
more efficient on a batch of eight than on eight single calls. A
:class:`MicroBatcher` runs one blocking function on a batch of the items of
many calls in a worker thread, and hands each caller its own slice back.

When to dispatch: a batcher with nothing running sends what it has at once
(on the next turn of the event loop, so calls made in the same turn share the
batch): a lone request never waits for a window. While a batch runs, new
items queue, and the queue goes the moment that batch finishes, or when it
reaches ``max_batch_size``; ``max_wait_ms`` bounds the wait of a queue whose
batcher's worker is busy with another batcher's work.

Written by hand because the libraries that do this (Ray Serve, Triton, vLLM's
own scheduler) bring a serving stack with them; this is the forty lines the
proxy needs. Calls are grouped by a hashable ``key`` (e.g. decoding
parameters): only items with equal keys share a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - item type
O = TypeVar("O")  # noqa: E741 - output type
R = TypeVar("R")


@dataclass
class _Pending(Generic[I, O]):
    items: Sequence[I]
    future: asyncio.Future[list[O]]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Queue(Generic[I, O]):
    pending: list[_Pending[I, O]] = field(default_factory=list)
    size: int = 0
    flusher: asyncio.TimerHandle | None = None


def model_executor() -> ThreadPoolExecutor:
    """One worker thread: torch already uses every core, so model calls run one at a time."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")


class MicroBatcher(Generic[I, O]):
    """Batch blocking ``fn(key, items) -> outputs`` calls coming from many coroutines.

    ``fn`` must return exactly one output per item, in order. An exception
    raised by ``fn`` is delivered to every caller whose items were in that
    batch; other batches are unaffected.
    """

    def __init__(
        self,
        fn: Callable[[Hashable, list[I]], list[O]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 5.0,
        executor: Executor | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._executor = executor or model_executor()
        self._owns_executor = executor is None
        self.name = name
        self._queues: dict[Hashable, _Queue[I, O]] = {}
        self._running = 0  # batches handed to the worker and not yet delivered

    async def submit(self, items: Sequence[I], key: Hashable = None) -> list[O]:
        """Queue ``items`` and wait for their outputs."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[O]] = loop.create_future()
        queue = self._queues.setdefault(key, _Queue())
        queue.pending.append(_Pending(items, future, loop))
        queue.size += len(items)
        if queue.size >= self.max_batch_size:
            self._flush(key)
        elif queue.flusher is None:
            # Idle: go on the next turn (same-turn calls join); busy: the running batch's end sends it.
            wait_s = 0.0 if self._running == 0 else self.max_wait_s
            queue.flusher = loop.call_later(wait_s, self._flush, key)
        return await future

    def _flush(self, key: Hashable) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.flusher is not None:
            queue.flusher.cancel()
        # Split into chunks of at most max_batch_size items without splitting a call.
        chunk: list[_Pending[I, O]] = []
        count = 0
        for pending in queue.pending:
            if chunk and count + len(pending.items) > self.max_batch_size:
                self._run(key, chunk)
                chunk, count = [], 0
            chunk.append(pending)
            count += len(pending.items)
        if chunk:
            self._run(key, chunk)

    def _run(self, key: Hashable, chunk: list[_Pending[I, O]]) -> None:
        items = [item for pending in chunk for item in pending.items]
        loop = chunk[0].loop
        self._running += 1
        task = loop.run_in_executor(self._executor, self._fn, key, items)
        task.add_done_callback(lambda done: self._deliver(done, chunk, len(items)))

    def _deliver(self, done: asyncio.Future[list[O]], chunk: list[_Pending[I, O]], n: int) -> None:
        self._running -= 1
        if self._running == 0:
            for key in list(self._queues):  # what queued while the worker was busy goes now, batched
                self._flush(key)
        error = done.exception()
        outputs: list[O] = [] if error is not None else done.result()
        if error is None and len(outputs) != n:
            error = RuntimeError(f"{self.name}: batch function returned {len(outputs)} outputs for {n} items")
        offset = 0
        for pending in chunk:
            if pending.future.done():  # the caller was cancelled
                offset += len(pending.items)
                continue
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(list(outputs[offset : offset + len(pending.items)]))
            offset += len(pending.items)

    async def run_alone(self, fn: Callable[[], R]) -> R:
        """Run one blocking call on the same worker (e.g. a streaming generation)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    @property
    def executor(self) -> Executor:
        return self._executor

    def close(self) -> None:
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
