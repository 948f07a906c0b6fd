"""The audit log after a ``kill -9`` of the proxy in the middle of a load: an intact database, no row for a
request that was never sent, and at most the queued rows lost (their number is printed: see docs/audit.md)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from aligner_proxy.core.audit import AuditStore
from tests.proxy.fakes import fake_upstream_app, serve

QUEUE_SIZE = 64
CLIENTS = 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the proxy exited: {process.communicate()[0]}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the proxy did not become ready")


def test_kill_9_mid_load_leaves_an_intact_log_missing_at_most_the_queued_rows(tmp_path: Path) -> None:
    log = tmp_path / "audit.sqlite"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ALIGNER_AUDIT_LOG": str(log),
        "ALIGNER_AUDIT_QUEUE_SIZE": str(QUEUE_SIZE),
        "ALIGNER_CORRECTOR_BACKEND": "remote",  # nothing to load: the keyword scorer, a corrector never called
        "ALIGNER_CORRECTOR_URL": "http://127.0.0.1:9/v1",
        "ALIGNER_CACHE_DIR": str(tmp_path),
    }
    sent: set[str] = set()
    answered: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def client(number: int) -> None:
        body = {"model": "fake", "messages": [{"role": "user", "content": "How do I bake bread?"}]}
        with httpx.Client(timeout=10) as http:
            for sequence in range(1_000_000):
                if stop.is_set():
                    return
                request_id = f"req-{number}-{sequence}"
                with lock:
                    sent.add(request_id)
                try:
                    reply = http.post(url + "/v1/chat/completions", json=body, headers={"x-request-id": request_id})
                except httpx.TransportError:
                    return  # the proxy is gone
                if reply.status_code == 200:
                    with lock:
                        answered.add(request_id)

    with serve(fake_upstream_app()) as upstream:
        command = [sys.executable, "-m", "aligner_proxy.cli", "serve", "--port", str(port)]
        command += ["--upstream-url", upstream + "/v1", "--served-model-name", "fake", "--scorer", "heuristic"]
        command += ["--log-level", "warning"]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_ready(url, process)
            clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
            for thread in clients:
                thread.start()
            deadline = time.monotonic() + 30
            while len(answered) < 300 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)  # mid-load: the clients are still sending
            process.wait(10)
        finally:
            stop.set()
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
        for thread in clients:
            thread.join(10)

    # What the next start would do: open the file (SQLite replays or drops the WAL), check it whole.
    store = AuditStore.open(log)
    assert store.integrity() == "ok"
    stored = [record.request_id for record in store.iter_all()]
    store.close()
    assert len(stored) == len(set(stored))  # one row per answer, none twice
    assert set(stored) <= sent  # nothing invented
    lost = answered - set(stored)
    print(f"\nkill -9 mid-load: {len(answered)} answered, {len(stored)} rows, {len(lost)} answered without a row")
    assert len(stored) > 0
    # At risk at the kill: the queue (QUEUE_SIZE rows) and the batch being written (at most as many).
    assert len(lost) <= 2 * QUEUE_SIZE, f"{len(lost)} answered requests have no row"
