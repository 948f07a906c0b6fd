"""Secrets stay out of what clients and logs see: URLs, relayed upstream errors, corrector errors."""

from __future__ import annotations

import logging

import httpx
import pytest

from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator
from aligner_proxy.core.errors import BackendConnectionError, BackendResponseError
from aligner_proxy.core.generation import GenerationParams
from aligner_proxy.core.redact import REDACTED, redact_text, redact_url
from aligner_proxy.server.errors import UpstreamError
from aligner_proxy.server.protocol import ChatCompletionRequest
from aligner_proxy.server.upstream import OpenAIUpstream

KEY = "sk-proj-Zx81mQ0pLw7Tr9bKv2Yc4abcd"
REQUEST = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])  # type: ignore[list-item]


def test_urls_lose_user_info_and_secret_query_values() -> None:
    shown = redact_url("https://alice:hunter22@api.example.com:8443/v1?api-key=abc123&deployment=gpt&token=t0k")
    assert "alice" not in shown and "hunter22" not in shown and "abc123" not in shown and "t0k" not in shown
    assert shown.startswith("https://api.example.com:8443/v1?") and "deployment=gpt" in shown


def test_text_loses_keys_their_masked_tails_and_key_like_tokens() -> None:
    echoed = f"Incorrect API key provided: sk-proj-{'*' * 20}abcd. Also {KEY} and Bearer abc.def"
    shown = redact_text(echoed, [KEY])
    assert "abcd" not in shown and KEY not in shown and "abc.def" not in shown and REDACTED in shown
    plain = "Knead the dough; a keyboard and a risk-free sketch."
    assert redact_text(plain, [KEY]) == plain


async def test_a_relayed_upstream_401_does_not_echo_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        message = f"Incorrect API key provided: sk-proj-{'*' * 24}abcd."
        return httpx.Response(401, json={"error": {"message": message, "type": "invalid_request_error"}})

    up = OpenAIUpstream("http://up/v1", api_key=KEY, transport=httpx.MockTransport(handler))
    with pytest.raises(UpstreamError) as caught:
        await up.chat(REQUEST, "m")
    assert caught.value.status_code == 401 and "abcd" not in caught.value.message


async def test_credentials_in_the_upstream_url_stay_out_of_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    up = OpenAIUpstream(
        "http://bob:s3cretpass@up.internal:9/v1?api-key=qq99", retries=1, transport=httpx.MockTransport(handler)
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamError) as caught:
        await up.chat(REQUEST, "m")
    shown = caught.value.message + caplog.text
    assert "s3cretpass" not in shown and "qq99" not in shown and "bob" not in shown
    assert "up.internal" in caught.value.message


async def test_a_remote_correctors_errors_do_not_echo_its_key_or_url_secrets() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"bad key {KEY}"}})

    gen = RemoteCompletionsGenerator(
        "http://u:pw12345678@corrector/v1?key=zz11", "m", api_key=KEY, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(BackendResponseError) as caught:
        await gen.generate(["p"], GenerationParams())
    assert KEY not in str(caught.value) and "abcd" not in str(caught.value)
    assert "pw12345678" not in repr(gen) and "zz11" not in repr(gen)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    gen = RemoteCompletionsGenerator(
        "http://u:pw12345678@corrector/v1?key=zz11", "m", max_retries=0, transport=httpx.MockTransport(down)
    )
    with pytest.raises(BackendConnectionError) as down_error:
        await gen.generate(["p"], GenerationParams())
    assert "pw12345678" not in str(down_error.value) and "zz11" not in str(down_error.value)
