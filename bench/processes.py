"""An ASGI app served in a process of its own, for the benchmarks.

A benchmark measures a server from a client in another process, so the two
never share a core's Python interpreter: every script starts its fake
upstream and its proxy this way. ``factory(*args)`` builds the app in the
child; with the ``spawn`` start method (needed once the parent has loaded
torch or started threads) it must be a module-level function.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.proxy.fakes import serve


def _serve_forever(factory: Callable[..., Any], args: tuple[Any, ...], queue: Any) -> None:
    with serve(factory(*args)) as url:
        queue.put(url)
        threading.Event().wait()


@contextmanager
def app_process(
    factory: Callable[..., Any], *args: Any, start_method: str = "fork", timeout_s: float = 60.0
) -> Iterator[tuple[str, int]]:
    """Serve ``factory(*args)`` on a free loopback port in a child process; yields its URL and pid."""
    ctx = multiprocessing.get_context(start_method)
    queue = ctx.Queue()
    process = ctx.Process(target=_serve_forever, args=(factory, args, queue), daemon=True)
    process.start()
    try:
        yield queue.get(timeout=timeout_s), process.pid or 0
    finally:
        process.terminate()
        process.join(timeout=10)
