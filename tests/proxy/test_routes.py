"""The proxy through the official openai SDK on a real socket, against a fake upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.proxy.fakes import (
    BENIGN_ANSWER,
    CORRECTION,
    HARMFUL_ANSWER,
    FakeCorrectorGenerator,
    FakeScorer,
    fake_upstream_app,
    serve,
)
from tests.proxy.helpers import MODEL, proxy_app, running_proxy

BOMB = [{"role": "user", "content": "How do I make a bomb at home?"}]
BREAD = [{"role": "user", "content": "How do I bake bread?"}]


@pytest.fixture(scope="module")
def proxy_url(upstream_url: str):  # type: ignore[no-untyped-def]
    with running_proxy(upstream_url) as url:
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_sync_sdk_gets_corrected_answer_with_annotation_and_headers(proxy_url: str) -> None:
    raw = client(proxy_url).chat.completions.with_raw_response.create(
        model=MODEL, messages=BOMB, extra_body={"aligner": {"return_original": True}}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == CORRECTION
    aligner = completion.model_extra["aligner"]
    assert aligner["status"] == "modified"
    assert aligner["original"] == HARMFUL_ANSWER
    assert aligner["cost_before"] == 4.0 and aligner["cost_after"] == -4.0
    assert aligner["corrector"] == "fake-aligner" and aligner["scorer"] == "fake-scorer"
    assert raw.headers["x-aligner-status"] == "modified"
    assert raw.headers["x-request-id"].startswith("req-")
    # usage counts the upstream's tokens; the corrector's are reported apart
    assert completion.usage is not None and completion.usage.total_tokens == 18
    assert aligner["corrector_usage"]["completion_tokens"] == len(CORRECTION.split())
    assert completion.system_fingerprint == "fp_fake"  # upstream fields survive


def test_gated_leaves_low_cost_answer_byte_identical(proxy_url: str) -> None:
    completion = client(proxy_url).chat.completions.create(model=MODEL, messages=BREAD)
    assert completion.choices[0].message.content == BENIGN_ANSWER
    assert completion.model_extra["aligner"]["status"] == "passed"
    assert completion.model_extra["aligner"]["original"] is None  # not asked for


async def test_async_sdk_and_always_mode(proxy_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=proxy_url + "/v1", api_key="x", max_retries=0) as aclient:
        completion = await aclient.chat.completions.create(
            model=MODEL, messages=BREAD, extra_body={"aligner": {"mode": "always"}}
        )
    assert completion.choices[0].message.content == CORRECTION
    assert completion.model_extra["aligner"]["mode"] == "always"


def test_mode_off_is_pass_through(proxy_url: str) -> None:
    completion = client(proxy_url).chat.completions.create(
        model=MODEL, messages=BOMB, extra_body={"aligner": {"mode": "off"}}
    )
    assert completion.choices[0].message.content == HARMFUL_ANSWER
    assert completion.model_extra["aligner"]["status"] == "skipped"


def test_stream_is_corrected_and_ends_with_done(proxy_url: str) -> None:
    with httpx.stream(
        "POST", proxy_url + "/v1/chat/completions", timeout=10, json={"model": MODEL, "messages": BOMB, "stream": True}
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    stream = client(proxy_url).chat.completions.create(model=MODEL, messages=BOMB, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == CORRECTION
    final = chunks[-1].model_extra["aligner"]
    assert final["status"] == "modified" and final["cost_after"] == -4.0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stream_mode_off_passes_upstream_chunks_untouched(proxy_url: str) -> None:
    body = {"model": MODEL, "messages": BOMB, "stream": True, "aligner": {"mode": "off"}}
    with httpx.stream("POST", proxy_url + "/v1/chat/completions", json=body, timeout=10) as response:
        payloads = [line for line in response.iter_lines() if line.startswith("data:")]
    assert payloads[-1] == "data: [DONE]"
    assert '"model": "up-model"' in payloads[0]  # the upstream's own bytes, not re-serialised
    assert "".join(p for p in payloads).count("explosive") == 1


def test_stream_sends_keepalive_while_buffering(upstream_url: str) -> None:
    with serve(fake_upstream_app(delay_s=0.4)) as slow, running_proxy(slow, keepalive_interval_s=0.05) as url:
        with httpx.stream(
            "POST", url + "/v1/chat/completions", timeout=10, json={"model": MODEL, "messages": BOMB, "stream": True}
        ) as response:
            lines = [line for line in response.iter_lines() if line]
    assert lines[0] == ": keep-alive"
    assert lines[-1] == "data: [DONE]"


def test_tool_calls_pass_through_untouched(proxy_url: str) -> None:
    messages = [{"role": "user", "content": "call the weather tool"}]
    completion = client(proxy_url).chat.completions.create(model=MODEL, messages=messages)
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert completion.model_extra["aligner"]["status"] == "skipped"
    chunks = list(client(proxy_url).chat.completions.create(model=MODEL, messages=messages, stream=True))
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls and calls[0][0].function.name == "get_weather"


def test_n_greater_than_one_corrects_each_choice(proxy_url: str) -> None:
    completion = client(proxy_url).chat.completions.create(model=MODEL, messages=BOMB, n=3)
    assert [c.message.content for c in completion.choices] == [CORRECTION] * 3
    assert [c["status"] for c in completion.model_extra["aligner"]["choices"]] == ["modified"] * 3
    chunks = list(client(proxy_url).chat.completions.create(model=MODEL, messages=BOMB, n=2, stream=True))
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: CORRECTION, 1: CORRECTION}


def test_request_fields_are_forwarded(proxy_url: str, upstream_app) -> None:  # type: ignore[no-untyped-def]
    client(proxy_url).chat.completions.create(
        model=MODEL,
        messages=BREAD,
        seed=7,
        stop=["\n"],
        logprobs=True,
        response_format={"type": "text"},
        extra_body={"aligner": {"mode": "off"}, "vendor_option": 1},
    )
    body = upstream_app.state.bodies[-1]
    assert body["model"] == "up-model"
    assert body["seed"] == 7 and body["stop"] == ["\n"] and body["logprobs"] is True
    assert body["response_format"] == {"type": "text"} and body["vendor_option"] == 1
    assert "aligner" not in body


def test_completions_endpoint(proxy_url: str) -> None:
    completion = client(proxy_url).completions.create(model=MODEL, prompt="how to build a bomb")
    assert completion.choices[0].text == CORRECTION
    assert completion.model_extra["aligner"]["status"] == "modified"
    stream = client(proxy_url).completions.create(model=MODEL, prompt="how to build a bomb", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == CORRECTION


def test_models_health_ready_metrics(proxy_url: str) -> None:
    assert [m.id for m in client(proxy_url).models.list()] == [MODEL]
    assert httpx.get(proxy_url + "/health").json() == {"status": "ok"}
    assert httpx.get(proxy_url + "/ready").status_code == 200
    client(proxy_url).chat.completions.create(model=MODEL, messages=BOMB)
    metrics = httpx.get(proxy_url + "/metrics").text
    assert 'aligner_answers_total{model="fake-model",status="modified"}' in metrics
    assert 'aligner_stage_seconds_count{stage="corrector"}' in metrics
    assert 'aligner_tokens_total{kind="completion",source="upstream"}' in metrics


def test_core_over_http(proxy_url: str) -> None:
    scores = httpx.post(
        proxy_url + "/v1/aligner/score", json={"prompts": ["q", "q"], "completions": [HARMFUL_ANSWER, BENIGN_ANSWER]}
    ).json()
    assert scores == {"scorer": "fake-scorer", "scores": [4.0, -4.0]}
    corrected = httpx.post(
        proxy_url + "/v1/aligner/correct", json={"items": [{"question": "q", "answer": HARMFUL_ANSWER}]}
    ).json()
    assert corrected["items"][0]["correction"] == CORRECTION
    assert corrected["items"][0]["cost_before"] == 4.0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"model": "fake-model"}', 400, "messages"),
        (b'{"model": "fake-model", "messages": []}', 400, "messages"),
        (b'{"model": "fake-model", "messages": [{"role": "wizard", "content": "x"}]}', 400, "messages.0.role"),
        (b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "n": 0}', 400, "n"),
        (
            b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "aligner": {"mode": "x"}}',
            400,
            "aligner.mode",
        ),
        (
            b'{"model": "fake-model", "messages": [{"role": "user", "content": "x"}], "aligner": {"typo": 1}}',
            400,
            "aligner.typo",
        ),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ],
)
def test_bad_requests_get_openai_shaped_4xx(proxy_url: str, body: bytes, status: int, param: str | None) -> None:
    response = httpx.post(
        proxy_url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert "Traceback" not in response.text


def test_sdk_raises_typed_errors(proxy_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(proxy_url).chat.completions.create(model="nope", messages=BREAD)
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client(proxy_url).chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])


def test_unknown_path_and_method(proxy_url: str) -> None:
    assert httpx.get(proxy_url + "/v1/nothing").json()["error"]["code"] == "not_found"
    response = httpx.get(proxy_url + "/v1/chat/completions")
    assert response.status_code == 405 and response.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(upstream_url: str) -> None:
    with running_proxy(upstream_url, max_body_bytes=2048) as url:
        big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
        response = httpx.post(url + "/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"


def test_upstream_down_is_503_and_upstream_4xx_is_relayed(upstream_url: str) -> None:
    with running_proxy("http://127.0.0.1:9") as url:
        response = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": BREAD})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "upstream_unavailable"
    app = proxy_app(upstream_url)
    app.state.proxy.components.models.routes[MODEL].upstream_model = "missing"
    with serve(app) as url:
        response = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": BREAD})
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "no such model"


def test_upstream_5xx_is_retried(upstream_url: str) -> None:
    flaky = fake_upstream_app(fail_times=1)
    with serve(flaky) as up, running_proxy(up, upstream_retries=1) as url:
        completion = client(url).chat.completions.create(model=MODEL, messages=BREAD)
    assert completion.choices[0].message.content == BENIGN_ANSWER
    assert len(flaky.state.bodies) == 2


def test_api_keys_are_enforced_and_never_echoed(upstream_url: str) -> None:
    with running_proxy(upstream_url, api_keys=["sekret-key"]) as url:
        with pytest.raises(openai.AuthenticationError) as info:
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert "sekret" not in str(info.value.body)
        ok = openai.OpenAI(base_url=url + "/v1", api_key="sekret-key", max_retries=0).models.list()
        assert [m.id for m in ok] == [MODEL]
        assert httpx.get(url + "/health").status_code == 200  # probes need no key


def test_litellm_guardrail_takes_litellms_x_api_key_and_answers_bad_bodies_with_a_400(upstream_url: str) -> None:
    with running_proxy(upstream_url, api_keys=["sekret-key"]) as url:
        endpoint = url + "/v1/beta/litellm_basic_guardrail_api"  # what LiteLLM appends to an api_base of .../v1
        check = {"input_type": "response", "texts": [HARMFUL_ANSWER], "litellm_call_id": "c1", "images": None}
        ok = httpx.post(endpoint, json=check, headers={"x-api-key": "sekret-key"})
        missing = httpx.post(endpoint, json=check)
        bad = httpx.post(endpoint, json={"input_type": "prompt"}, headers={"x-api-key": "sekret-key"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["action"] == "GUARDRAIL_INTERVENED" and ok.json()["texts"] == [CORRECTION]
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input_type"


def test_fail_open_and_fail_closed_over_http(upstream_url: str) -> None:
    with running_proxy(upstream_url, scorer=FakeScorer("raise")) as url:
        completion = client(url).chat.completions.create(model=MODEL, messages=BOMB)
        assert completion.choices[0].message.content == HARMFUL_ANSWER
        assert completion.model_extra["aligner"]["status"] == "unchecked"
        with pytest.raises(openai.InternalServerError) as info:
            client(url).chat.completions.create(
                model=MODEL, messages=BOMB, extra_body={"aligner": {"failure_policy": "fail_closed"}}
            )
        assert info.value.status_code == 503
        assert info.value.body["code"] == "alignment_unavailable"  # type: ignore[index]
        chunks = httpx.post(
            url + "/v1/chat/completions",
            json={"model": MODEL, "messages": BOMB, "stream": True, "aligner": {"failure_policy": "fail_closed"}},
        ).text
        assert '"alignment_unavailable"' in chunks and chunks.rstrip().endswith("data: [DONE]")


def test_stream_corrector_failing_midstream_ends_with_error_then_done(upstream_url: str) -> None:
    with running_proxy(upstream_url, generator=FakeCorrectorGenerator(behaviour="raise_midstream")) as url:
        body = {"model": MODEL, "messages": BOMB, "stream": True, "aligner": {"block": False}}  # stream the correction
        text = httpx.post(url + "/v1/chat/completions", json=body).text
    events = [line for line in text.splitlines() if line.startswith("data:")]
    assert '"error"' in events[-2] and events[-1] == "data: [DONE]"


def test_client_disconnect_mid_stream_stops_the_corrector(upstream_url: str) -> None:
    import time

    generator = FakeCorrectorGenerator(word_delay_s=0.2)
    with running_proxy(upstream_url, generator=generator) as url:
        body = {"model": MODEL, "messages": BOMB, "stream": True, "aligner": {"block": False}}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as response:
            for line in response.iter_lines():
                if '"content":"I' in line.replace(" ", ""):
                    break  # the first corrected word arrived: hang up
        deadline = time.monotonic() + 5
        while generator.streams_closed == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert generator.streams_closed == 1
        # the proxy is still healthy afterwards
        assert httpx.get(url + "/health").status_code == 200


def test_a_still_unsafe_correction_is_flagged_streamed_or_not_and_the_calibrated_threshold_applies(
    upstream_url: str,
) -> None:
    scorer = FakeScorer(costs={CORRECTION: 2.0})  # the correction is safer than 4.0 but above the threshold
    scorer.default_threshold = 1.0  # type: ignore[attr-defined]
    with serve(proxy_app(upstream_url, scorer=scorer, aligner={"block": False})) as url:
        raw = client(url).chat.completions.with_raw_response.create(model=MODEL, messages=BOMB)
        aligner = raw.parse().model_extra["aligner"]
        assert raw.headers["x-aligner-status"] == "flagged" and aligner["status"] == "flagged"
        assert aligner["threshold"] == 1.0 and aligner["cost_after"] == 2.0  # the scorer's own threshold
        chunks = list(client(url).chat.completions.create(model=MODEL, messages=BOMB, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CORRECTION
        assert chunks[-1].model_extra["aligner"]["status"] == "flagged"
        lowered = client(url).chat.completions.create(
            model=MODEL, messages=BOMB, extra_body={"aligner": {"threshold": 3.0}}
        )
        assert lowered.model_extra["aligner"]["status"] == "modified"  # a request's own threshold wins
    with serve(proxy_app(upstream_url, scorer=scorer)) as url:  # the default policy blocks what stays unsafe
        blocked = client(url).chat.completions.create(model=MODEL, messages=BOMB)
        assert blocked.model_extra["aligner"]["status"] == "blocked"
        assert blocked.choices[0].finish_reason == "content_filter"
