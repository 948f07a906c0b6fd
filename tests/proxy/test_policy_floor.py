"""The policy floor: under ALIGNER_POLICY_FLOOR clients may make a route's policy stricter, never laxer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aligner_proxy.core.policy import PolicyConfig
from tests.proxy.fakes import fake_upstream_app, serve
from tests.proxy.helpers import MODEL, running_proxy


def test_relaxed_by_names_each_relaxation() -> None:
    base = PolicyConfig(mode="gated", threshold=1.0, block=True, failure_policy="fail_closed")
    assert base.relaxed_by(base) == {}
    assert base.relaxed_by(PolicyConfig(mode="always", threshold=0.5, block=True, failure_policy="fail_closed")) == {}
    laxer = PolicyConfig(mode="off", threshold=3.0, block=False, failure_policy="fail_open")
    assert set(base.relaxed_by(laxer)) == {"mode", "threshold", "block", "failure_policy"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve(fake_upstream_app()) as url:
        yield url


def ask(url: str, aligner: dict[str, Any], key: str = "sk-client") -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "aligner": aligner}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize(
    ("aligner", "param"),
    [({"mode": "off"}, "aligner.mode"), ({"threshold": 50}, "aligner.threshold"), ({"block": False}, "aligner.block")],
)
def test_under_the_floor_a_relaxing_request_is_403(upstream: str, aligner: dict[str, Any], param: str) -> None:
    keys = ["sk-client", "sk-operator"]
    with running_proxy(upstream, api_keys=keys, policy_floor=True, policy_override_keys=["sk-operator"]) as url:
        refused = ask(url, aligner)
        stricter = ask(url, {"mode": "always", "threshold": -1})
        operator = ask(url, aligner, key="sk-operator")
        streamed = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "aligner": aligner, "stream": True},
            headers={"Authorization": "Bearer sk-client"},
        )
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "policy_locked" and error["type"] == "permission_error" and error["param"] == param
    assert streamed.status_code == 403  # refused before any stream starts
    assert stricter.status_code == 200 and operator.status_code == 200


def test_without_the_floor_clients_may_relax(upstream: str) -> None:
    with running_proxy(upstream) as url:
        response = ask(url, {"mode": "off"})
    assert response.status_code == 200 and response.json()["aligner"]["status"] == "skipped"
