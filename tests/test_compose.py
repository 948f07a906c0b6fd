"""`compose.yaml`: its profiles, health checks and volumes, and every `ALIGNER_*` variable against the settings.

A setting renamed in :class:`~aligner_proxy.server.settings.Settings` must fail
here, not in a container at start-up: pydantic-settings ignores an environment
variable that names no field. With a container engine (and
``ALIGNER_TEST_DOCKER=1``, since the build takes minutes) the CPU image is
built and its health check must pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from aligner_proxy.server.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "compose.yaml"
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def with_defaults(value: object) -> str:
    """A compose value with every ``${VAR:-default}`` replaced by its default (what `up` sees with VAR unset)."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def unknown_settings(names: list[str]) -> list[str]:
    """The ``ALIGNER_*`` names that reach no field of :class:`Settings` (``__`` goes down into nested models)."""
    unknown = []
    for name in names:
        model: type[BaseModel] | None = Settings
        for part in name.removeprefix("ALIGNER_").lower().split("__"):
            field = model.model_fields.get(part) if model is not None else None
            annotation = field.annotation if field is not None else None
            if field is None:
                unknown.append(name)
                break
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return unknown


def services_in(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if profile in s.get("profiles", [])}


def test_both_profiles_have_health_checks_named_volumes_and_pinned_images() -> None:
    compose = load()
    services = compose["services"]
    assert all(s.get("profiles") for s in services.values()), "a service without a profile starts with every `up`"
    assert set(services_in(compose, "cpu")) == {"proxy"}
    assert set(services_in(compose, "gpu")) == {"upstream", "corrector", "proxy-gpu"}
    declared = set(compose["volumes"])
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"
        mounted = {volume.split(":")[0] for volume in service["volumes"]}
        assert mounted and mounted <= declared, f"{name} mounts {mounted}, declared {declared}"
    for name in ("proxy", "proxy-gpu"):
        assert "/ready" in " ".join(services[name]["healthcheck"]["test"])  # up once the models are loaded
        assert services[name]["build"] == "."
    for name in ("upstream", "corrector"):
        assert services[name]["image"].startswith("vllm/vllm-openai:")
        [device] = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"


def test_the_gpu_proxy_points_at_both_vllm_servers_and_waits_for_them() -> None:
    services = load()["services"]
    env = {k: with_defaults(v) for k, v in services["proxy-gpu"]["environment"].items()}
    assert env["ALIGNER_CORRECTOR_BACKEND"] == "remote"
    for variable, server in (("ALIGNER_UPSTREAM__BASE_URL", "upstream"), ("ALIGNER_CORRECTOR_URL", "corrector")):
        command = " ".join(services[server]["command"])
        port = re.search(r"--port=(\d+)", command)
        assert port is not None and env[variable] == f"http://{server}:{port.group(1)}/v1"
        assert services["proxy-gpu"]["depends_on"][server]["condition"] == "service_healthy"
    served = {
        s: re.search(r"--served-model-name=(\S+)", " ".join(services[s]["command"])) for s in ("upstream", "corrector")
    }
    assert env["ALIGNER_UPSTREAM__MODEL"] == served["upstream"].group(1)  # type: ignore[union-attr]
    assert env["ALIGNER_CORRECTOR_MODEL"] == served["corrector"].group(1)  # type: ignore[union-attr]


def test_every_aligner_variable_names_a_setting_and_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert unknown_settings(["ALIGNER_CORRECTOR_BACKENDS", "ALIGNER_UPSTREAM__URL"]) == [
        "ALIGNER_CORRECTOR_BACKENDS",
        "ALIGNER_UPSTREAM__URL",
    ]  # the check itself catches a misspelt or renamed setting
    for name, service in load()["services"].items():
        env = {k: with_defaults(v) for k, v in service.get("environment", {}).items()}
        aligner = [k for k in env if k.startswith("ALIGNER_")]
        assert unknown_settings(aligner) == [], name
        for key in [k for k in os.environ if k.startswith("ALIGNER_")]:
            monkeypatch.delenv(key)
        for key in aligner:
            monkeypatch.setenv(key, env[key])
        settings = Settings()  # the values parse and validate as the container would see them
        if name == "proxy-gpu":
            assert settings.corrector_backend == "remote" and settings.upstream.base_url == "http://upstream:8000/v1"


def test_no_secret_is_written_in_the_file() -> None:
    for name, service in load()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if _SECRET_NAME.search(key):
                assert with_defaults(value) in ("", "[]"), (
                    f"{name}: {key} holds a literal; read it from the environment"
                )


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_accepts_the_file() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    for profile in ("cpu", "gpu"):
        done = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "--profile", profile, "config", "--quiet"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr


def _engine_reason() -> str | None:
    if os.environ.get("ALIGNER_TEST_DOCKER") != "1":
        return "building the CPU image takes minutes: set ALIGNER_TEST_DOCKER=1 to run it"
    if shutil.which("docker") is None:
        return "no docker client"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no container engine is running (docker info fails)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_engine_reason() is not None, reason=_engine_reason() or "")
def test_the_cpu_image_builds_and_turns_healthy() -> None:
    tag = f"aligner-proxy:test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-t", tag, str(REPO)], check=True)
    container = subprocess.run(
        ["docker", "run", "-d", "--health-interval=5s", tag], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        deadline = time.monotonic() + 600
        status = ""
        while status != "healthy" and time.monotonic() < deadline:
            time.sleep(5)
            status = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", container], capture_output=True, text=True
            ).stdout.strip()
            assert status != "unhealthy", subprocess.run(["docker", "logs", container], capture_output=True).stderr
        assert status == "healthy"
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
