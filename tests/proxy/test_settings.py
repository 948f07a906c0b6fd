"""Settings: defaults, env over YAML, flags over env, routes, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aligner_proxy.server.settings import Settings, load_settings

YAML = """
port: 9100
scorer: heuristic
models:
  - name: remote-aligned
    upstream: {base_url: "http://127.0.0.1:9999/v1", model: gpt-x, api_key_env: TEST_UPSTREAM_KEY}
    aligner: {mode: always, block: true}
  - name: local
    upstream: {model: smollm2}
"""


def test_defaults_serve_the_embedded_model_on_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALIGNER_HOST", "ALIGNER_PORT", "ALIGNER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    [route] = settings.routes()
    assert route.upstream.embedded and route.upstream.model == "smollm2"
    assert route.aligner.mode == "gated" and settings.scorer == "cost-minilm-ft-v3"
    assert settings.core_config().adapter_spec() == "aligner-smollm2-lora-v1"
    assert Settings(corrector_model="/some/aligner").core_config().adapter_spec() is None
    assert Settings(corrector_adapter="none").core_config().adapter_spec() is None


def test_yaml_routes_with_env_and_flag_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "aligner.yaml"
    config.write_text(YAML)
    monkeypatch.setenv("ALIGNER_PORT", "9200")
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-test")
    settings = load_settings(config)
    assert settings.port == 9200  # env beats the file
    assert load_settings(config, port=9300).port == 9300  # a flag beats env
    assert load_settings(config, port=None).port == 9200  # an absent flag does not mask env
    remote, local = settings.routes()
    assert remote.name == "remote-aligned" and remote.aligner.mode == "always" and remote.aligner.block
    assert remote.upstream.resolved_api_key() == "sk-test"
    assert local.upstream.embedded and local.aligner.mode == "gated"


def test_nested_env_and_partial_flag_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNER_ALIGNER__THRESHOLD", "1.5")
    settings = load_settings(aligner={"mode": "always"})
    assert settings.aligner.mode == "always" and settings.aligner.threshold == 1.5


def test_invalid_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(aligner={"mode": "sometimes"})
    with pytest.raises(ValidationError, match="corrector_url"):
        Settings(corrector_backend="remote")
    with pytest.raises(ValidationError, match="duplicate"):
        Settings(models=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")


def test_api_key_is_secret() -> None:
    settings = Settings(upstream={"base_url": "http://x/v1", "api_key": "sk-very-secret"})
    assert "sk-very-secret" not in repr(settings)
    assert settings.routes()[0].upstream.resolved_api_key() == "sk-very-secret"
