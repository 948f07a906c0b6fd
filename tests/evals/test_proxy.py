"""Finding or starting the proxy a run talks to."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from evals.config import ProxyConfig
from evals.errors import TargetError
from evals.proxy import proxy_for_run, proxy_is_up
from tests.proxy.fakes import serve


def test_auto_uses_a_proxy_that_answers_health(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    with serve(app) as url:
        assert proxy_is_up(url + "/v1")
        with proxy_for_run(ProxyConfig(url=url + "/v1", start="auto"), tmp_path / "proxy.log") as got:
            assert got == url + "/v1"
    assert not (tmp_path / "proxy.log").exists()


def test_never_trusts_the_url_without_asking(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with proxy_for_run(ProxyConfig(url="http://127.0.0.1:9/v1", start="never"), tmp_path / "p.log") as got:
        assert got == "http://127.0.0.1:9/v1"


def test_a_proxy_that_cannot_start_is_reported_with_its_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_setting: 1\n")
    config = ProxyConfig(url="http://127.0.0.1:9/v1", start="always", config=str(bad), ready_timeout_s=60)
    with pytest.raises(TargetError, match="exited with code 2"), proxy_for_run(config, tmp_path / "proxy.log"):
        pass
    assert "invalid settings" in (tmp_path / "proxy.log").read_text()
