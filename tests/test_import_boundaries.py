"""Who may import whom: the core serves the server, training, evals and batch, and imports none of them.

Each check runs in a fresh interpreter, so what one test imported cannot hide
what another module pulls in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_ONLY = ("aligner_proxy.server", "fastapi", "starlette", "uvicorn", "prometheus_client")


def imported_after(code: str) -> set[str]:
    """The module names loaded by a fresh interpreter after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def offending(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == s or m.startswith(s + ".") for s in SERVER_ONLY))


@pytest.mark.parametrize(
    "module", ["training.rl.rewards", "training.weak_to_strong", "evals.runner", "aligner_proxy.batch"]
)
def test_training_evals_and_batch_import_no_server(module: str) -> None:
    modules = imported_after(f"import {module}")
    assert module in modules
    assert offending(modules) == []


def test_the_batch_tools_and_the_cli_import_ray_only_when_the_ray_engine_runs() -> None:
    modules = imported_after("import aligner_proxy.batch, aligner_proxy.batch.ray_engine, aligner_proxy.cli")
    assert "aligner_proxy.batch.ray_engine" in modules
    assert not {m for m in modules if m == "ray" or m.startswith("ray.")}


def test_the_core_imports_no_server_no_web_framework_and_no_wire_models() -> None:
    code = (
        "import importlib, pkgutil, aligner_proxy.core as core\n"
        "for info in pkgutil.walk_packages(core.__path__, 'aligner_proxy.core.'):\n"
        "    importlib.import_module(info.name)\n"
    )
    modules = imported_after(code)
    assert {"aligner_proxy.core.policy", "aligner_proxy.core.loading", "aligner_proxy.core.backends.remote"} <= modules
    assert offending(modules) == []


def test_the_boundary_check_sees_a_server_import() -> None:
    """The check itself: importing the server is caught."""
    assert "aligner_proxy.server.protocol" in offending(imported_after("import aligner_proxy.server.app"))
