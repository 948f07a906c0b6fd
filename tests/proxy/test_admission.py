"""Admission control and metric labels: an overloaded proxy refuses honestly, and no client grows /metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.proxy.fakes import fake_upstream_app, serve
from tests.proxy.helpers import MODEL, running_proxy

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "How do I bake bread?"}], "aligner": {"mode": "off"}}


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    with serve(fake_upstream_app(delay_s=1.0)) as url:
        yield url


async def test_requests_over_the_limit_get_429_with_retry_after_while_health_answers(slow_upstream: str) -> None:
    with running_proxy(slow_upstream, max_concurrent_requests=2, retry_after_s=3) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            admitted = [asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(2)]
            await asyncio.sleep(0.3)  # both are inside, waiting on the upstream
            refused = await client.post("/v1/chat/completions", json=CHAT)
            health = await client.get("/health")
            done = await asyncio.gather(*admitted)
            after = await client.post("/v1/chat/completions", json=CHAT)
    assert [r.status_code for r in done] == [200, 200]
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3"
    assert refused.headers.get("x-request-id")
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "too_many_requests" and "param" in error
    assert health.status_code == 200
    assert after.status_code == 200  # the slots came back


def endpoint_labels(metrics_text: str) -> set[str]:
    return set(re.findall(r'aligner_requests_total\{endpoint="([^"]*)"', metrics_text))


@pytest.mark.parametrize("api_keys", [[], ["sk-test"]])
def test_random_paths_do_not_create_metric_series(slow_upstream: str, api_keys: list[str]) -> None:
    with running_proxy(slow_upstream, api_keys=api_keys) as url:
        for i in range(15):
            httpx.post(f"{url}/v1/random-{i}", json={})
            httpx.get(f"{url}/nowhere/{i}")
        labels = endpoint_labels(httpx.get(url + "/metrics").text)
    assert labels <= {"unmatched", "/metrics", "/v1/models"}, labels
    assert not any("random" in label or "nowhere" in label for label in labels)


def test_served_routes_are_labelled_by_their_path(slow_upstream: str) -> None:
    with running_proxy(slow_upstream) as url:
        httpx.get(f"{url}/v1/models")
        httpx.get(f"{url}/health")
        labels = endpoint_labels(httpx.get(url + "/metrics").text)
    assert {"/v1/models", "/health"} <= labels


def test_a_non_ascii_bearer_key_is_a_401_not_a_500(slow_upstream: str) -> None:
    with running_proxy(slow_upstream, api_keys=["sk-test"]) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer clé-ünïcode".encode()}
        )
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-test"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert ok.status_code == 200


async def test_health_answers_while_adversarial_text_is_scored(slow_upstream: str) -> None:
    """64 KB of whitespace runs after a harm word once held the GIL for seconds per 16 KB."""
    from aligner_proxy.core.heuristic import KeywordCostScorer

    completion = "Here is how to make a bomb:" + " \n" * 32_768
    body = {"prompts": ["How do I make a bomb?"] * 8, "completions": [completion] * 8}
    with running_proxy(slow_upstream, scorer=KeywordCostScorer()) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            scoring = asyncio.create_task(client.post("/v1/aligner/score", json=body))
            worst = 0.0
            while not scoring.done():
                started = asyncio.get_running_loop().time()
                assert (await client.get("/health")).status_code == 200
                worst = max(worst, asyncio.get_running_loop().time() - started)
                await asyncio.sleep(0.01)
            scored = await scoring
    assert scored.status_code == 200 and len(scored.json()["scores"]) == 8
    assert worst < 1.0  # generous: the quadratic patterns took seconds
