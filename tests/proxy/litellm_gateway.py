"""A real LiteLLM proxy process for end-to-end tests: its virtualenv, its config, its start and stop.

LiteLLM is not a dependency of this project (it pins its own versions of fastapi, pydantic and openai),
so it lives in a virtualenv of its own, created once and cached under the project's cache directory.
1.106.2 is the newest release whose dependencies the package index here serves (1.106.3 and later
need a newer certifi); the guardrail contract the proxy implements was read from its source.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from aligner_proxy.core.models import DEFAULT_CACHE_DIR

LITELLM_VERSION = "1.106.2"
VENV_DIR = DEFAULT_CACHE_DIR / f"litellm-venv-{LITELLM_VERSION}"
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 180

# LiteLLM fetches a model cost map and other lists at start-up: use its bundled copies, and point
# the remote URLs at a dead loopback port, so the process reaches nothing but 127.0.0.1.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_MODEL_COST_MAP_URL": "http://127.0.0.1:9/none",
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": "http://127.0.0.1:9/none",
    "LITELLM_AUTOROUTER_PRESETS_URL": "http://127.0.0.1:9/none",
    "LITELLM_BLOG_POSTS_URL": "http://127.0.0.1:9/none",
    "LITELLM_LOG": "ERROR",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
}


class VenvUnavailable(Exception):
    """The LiteLLM virtualenv could not be created (no package index, no venv module, a failed install)."""


def litellm_venv(venv: Path = VENV_DIR) -> Path:
    """The virtualenv's ``litellm`` executable, creating the virtualenv first when it is missing.

    It is built in place (a virtualenv's scripts name its path, so it cannot be moved) under a lock,
    and counts as there only once a marker says the install finished: a concurrent or interrupted run
    never leaves half a virtualenv to be reused."""
    executable, installed = venv / "bin" / "litellm", venv / ".installed"
    if installed.exists():
        return executable
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed.exists():  # made by whoever held the lock before
            return executable
        shutil.rmtree(venv, ignore_errors=True)
        base_python = getattr(sys, "_base_executable", sys.executable)
        steps = [
            [base_python, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
        ]
        for step in steps:
            try:
                subprocess.run(step, check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            except (OSError, subprocess.SubprocessError) as exc:
                shutil.rmtree(venv, ignore_errors=True)
                output = getattr(exc, "stderr", None) or getattr(exc, "stdout", None) or str(exc)
                raise VenvUnavailable(f"{' '.join(step[:4])} failed: {str(output)[-800:]}") from exc
        installed.touch()
    return executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiteLLMProxy:
    """A running LiteLLM proxy: its OpenAI base URL, the key its clients send, and its log."""

    base_url: str
    master_key: str
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        return "LiteLLM's log:\n" + self.log.read_text(errors="replace")[-chars:]


@contextmanager
def running_litellm(executable: Path, config: dict[str, object], workdir: Path) -> Iterator[LiteLLMProxy]:
    """Start ``litellm --config`` on a free 127.0.0.1 port in its own process group, wait until it
    answers, and stop the group (TERM, then KILL) on exit."""
    (workdir / "litellm.yaml").write_text(yaml.safe_dump(config))
    log = workdir / "litellm.log"
    port = free_port()
    master_key = "sk-test-" + secrets.token_hex(8)  # LiteLLM refuses to start without a master key
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(OFFLINE_ENV, LITELLM_MASTER_KEY=master_key)
    command = [str(executable), "--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    proxy = LiteLLMProxy(f"http://127.0.0.1:{port}", master_key, log)
    try:
        _wait_ready(proxy, process)
        yield proxy
    finally:
        _stop(process)


def _wait_ready(proxy: LiteLLMProxy, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"LiteLLM exited with {process.returncode} while starting\n{proxy.log_tail()}")
        try:
            if httpx.get(proxy.base_url + "/health/liveliness", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"LiteLLM did not answer within {START_TIMEOUT_S} s\n{proxy.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """TERM the process group this module started (LiteLLM and any workers), KILL it if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
