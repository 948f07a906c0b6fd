"""Bodies the proxy cannot process are 400s in OpenAI's shape, and the connection stays usable."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aligner_proxy.server.bodies import decode_json_object
from aligner_proxy.server.errors import InvalidRequestError
from tests.proxy.fakes import fake_upstream_app, serve
from tests.proxy.helpers import MODEL, running_proxy


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    with serve(fake_upstream_app()) as upstream, running_proxy(upstream) as url:
        yield url


def chat(content: str = "Hi", **extra: str) -> str:
    fields = "".join(f', "{k}": {v}' for k, v in extra.items())
    return f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "{content}"}}]{fields}}}'


BAD_BODIES = {
    "deep nesting": '{"model": "m", "x": ' + "[" * 5000 + "]" * 5000 + "}",
    "moderate nesting": '{"model": "m", "x": ' + "[" * 40 + "]" * 40 + "}",
    "huge integer": chat(seed="9" * 5000),
    "NaN": chat(temperature="NaN"),
    "Infinity": chat(top_p="Infinity"),
    "1e999": chat(temperature="1e999"),
    "threshold NaN": chat(aligner='{"threshold": NaN}'),
    "lone surrogate in content": chat(content="\\ud800"),
    "lone surrogate in model": '{"model": "\\udfff", "messages": []}',
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_unprocessable_bodies_are_400s_and_the_connection_survives(proxy: str, name: str) -> None:
    with httpx.Client(base_url=proxy, timeout=30) as client:
        response = client.post(
            "/v1/chat/completions", content=BAD_BODIES[name], headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
        assert "Traceback" not in response.text
        # The same kept-alive connection serves the next request.
        assert client.get("/health").status_code == 200


RAW_BAD_BODIES = {
    "escaped lone surrogate": b'{"m": "\\ud800"}',
    "UTF-8-encoded lone surrogate": b'{"m": "\xed\xa0\x80"}',
    "UTF-16 lone surrogate": '{"m": "x"}'.encode("utf-16-le").replace(b"x\x00", b"\x00\xd8"),
    "UTF-16 with a byte-order mark": '{"m": "\ud800"}'.encode("utf-16", "surrogatepass"),
    "33 levels in a few brackets' worth of text": b'{"x": ' + b"[" * 32 + b"]" * 32 + b"}",
}


@pytest.mark.parametrize("name", list(RAW_BAD_BODIES))
def test_the_decoder_refuses_what_its_fast_path_must_not_skip(name: str) -> None:
    with pytest.raises(InvalidRequestError):
        decode_json_object(RAW_BAD_BODIES[name])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"m": "\\ud83d\\ude00 a surrogate pair is one character"}',
        '{"m": "é 😀", "n": [[1], {"a": [2]}]}'.encode(),
        b'{"x": ' + b"[" * 31 + b"]" * 31 + b"}",
    ],
)
def test_the_decoder_accepts_pairs_non_ascii_text_and_nesting_within_the_limit(raw: bytes) -> None:
    assert isinstance(decode_json_object(raw), dict)


def test_an_empty_prompt_list_is_a_400(proxy: str) -> None:
    response = httpx.post(f"{proxy}/v1/completions", json={"model": MODEL, "prompt": []})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


def test_a_body_that_is_not_json_by_its_content_type_is_a_400(proxy: str) -> None:
    response = httpx.post(
        f"{proxy}/v1/chat/completions", content=chat(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400 and "application/json" in response.json()["error"]["message"]


def test_a_valid_body_still_passes(proxy: str) -> None:
    response = httpx.post(f"{proxy}/v1/chat/completions", content=chat(), headers={"content-type": "application/json"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100_000},
            "max_tokens",
        ),
        ("/v1/completions", {"prompt": ["a"] * 20, "n": 4}, "prompt"),
        ("/v1/completions", {"prompt": "a", "max_tokens": 5000}, "max_tokens"),
    ],
)
def test_generation_beyond_the_operators_limits_is_a_400(proxy: str, path: str, body: dict, param: str) -> None:  # type: ignore[type-arg]
    response = httpx.post(f"{proxy}{path}", json={"model": MODEL, **body})
    assert response.status_code == 400 and response.json()["error"]["param"] == param
