"""Use a running proxy, or start ``aligner-proxy serve`` for the run and stop it afterwards.

A started proxy is a child process (``python -m aligner_proxy.cli serve``) on
the host and port of ``proxy.url``, with its output in
``<output_dir>/proxy.log``; the harness waits for ``GET /ready`` to answer 200
(the embedded models load after the server starts listening) and terminates
the process when the run ends, also on error.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from evals.config import ProxyConfig
from evals.errors import TargetError

logger = logging.getLogger(__name__)


def _root(url: str) -> str:
    """``http://host:port/v1`` → ``http://host:port`` (where /health and /ready live)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return None


def proxy_is_up(url: str) -> bool:
    response = _get(_root(url) + "/health")
    return response is not None and response.status_code == 200


@contextmanager
def proxy_for_run(config: ProxyConfig, log_path: Path) -> Iterator[str]:
    """Yield the proxy's base URL, starting a proxy first when ``config.start`` asks for one."""
    if config.start == "never" or (config.start == "auto" and proxy_is_up(config.url)):
        logger.info("using the proxy at %s", config.url)
        yield config.url
        return
    parts = urlsplit(config.url)
    if parts.hostname is None or parts.port is None:
        raise TargetError(f"proxy.url {config.url!r} needs an explicit host and port to start a proxy on")
    command = [
        sys.executable,
        "-m",
        "aligner_proxy.cli",
        "serve",
        "--host",
        parts.hostname,
        "--port",
        str(parts.port),
    ]
    if config.config:
        command += ["--config", config.config]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("starting the proxy: %s (log: %s)", " ".join(command), log_path)
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **config.env})
    try:
        _wait_ready(config, process, log_path)
        yield config.url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logger.info("stopped the proxy (pid %d)", process.pid)


def _wait_ready(config: ProxyConfig, process: subprocess.Popen[bytes], log_path: Path) -> None:
    ready = _root(config.url) + "/ready"
    deadline = time.monotonic() + config.ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TargetError(f"the proxy exited with code {process.returncode} while starting; see {log_path}")
        response = _get(ready)
        if response is not None and response.status_code == 200:
            logger.info("the proxy is ready at %s", config.url)
            return
        if response is not None and "loading failed" in response.text:
            raise TargetError(f"the proxy could not load its models: {response.text[:500]}; see {log_path}")
        time.sleep(1.0)
    raise TargetError(f"the proxy was not ready after {config.ready_timeout_s:.0f} s; see {log_path}")
