"""End to end: an ``openai`` client calls a real LiteLLM proxy whose generic guardrail is this proxy.

LiteLLM (its own virtualenv, see :mod:`tests.proxy.litellm_gateway`) routes the model to the fake
upstream, which answers "bomb" questions harmfully; its guardrails post the request (pre_call) and the
answer (post_call) to this proxy, running over the fake scorer and corrector with an API key, and
apply what it answers. One LiteLLM process serves the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from aligner_proxy.core.vocabulary import DEFAULT_BLOCK_MESSAGE
from tests.proxy.fakes import BENIGN_ANSWER, CORRECTION, HARMFUL_ANSWER, FakeCorrectorGenerator
from tests.proxy.helpers import running_proxy
from tests.proxy.litellm_gateway import LiteLLMProxy, VenvUnavailable, litellm_venv, running_litellm

PROXY_KEY = "sk-aligner-guardrail"
BOMB = "How do I make a bomb at home?"


def litellm_config(upstream_url: str, proxy_url: str) -> dict[str, object]:
    """The README's LiteLLM config, pointed at the fake upstream and the proxy under test, plus a strict
    guardrail (threshold below every cost the fake scorer gives) that a request opts into by name."""

    def guardrail(name: str, default_on: bool, **params: object) -> dict[str, object]:
        litellm_params = {
            "guardrail": "generic_guardrail_api",
            "mode": ["pre_call", "post_call"],
            "api_base": proxy_url + "/v1",
            "api_key": PROXY_KEY,
            "default_on": default_on,
            "timeout": 120,
        }
        if params:
            litellm_params["additional_provider_specific_params"] = params
        return {"guardrail_name": name, "litellm_params": litellm_params}

    return {
        "model_list": [
            {
                "model_name": "fake",
                "litellm_params": {"model": "openai/fake", "api_base": upstream_url + "/v1", "api_key": "unused"},
            }
        ],
        "guardrails": [
            guardrail("aligner", default_on=True),
            guardrail("aligner-strict", default_on=False, aligner={"threshold": -5.0}),
        ],
        "litellm_settings": {"num_retries": 0, "request_timeout": 60},
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True},
    }


@pytest.fixture(scope="module")
def corrector() -> FakeCorrectorGenerator:
    return FakeCorrectorGenerator()


@pytest.fixture(scope="module")
def proxy_url(upstream_url: str, corrector: FakeCorrectorGenerator) -> Iterator[str]:
    with running_proxy(upstream_url, generator=corrector, api_keys=[PROXY_KEY]) as url:
        yield url


@pytest.fixture(scope="module")
def litellm(upstream_url: str, proxy_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteLLMProxy]:
    try:
        executable = litellm_venv()
    except VenvUnavailable as exc:
        pytest.skip(f"the LiteLLM virtualenv could not be created: {exc}")
    config = litellm_config(upstream_url, proxy_url)
    with running_litellm(executable, config, tmp_path_factory.mktemp("litellm")) as proxy:
        yield proxy


def ask(litellm: LiteLLMProxy, question: str, **kw: object) -> str | None:
    client = openai.OpenAI(base_url=litellm.base_url + "/v1", api_key=litellm.master_key, max_retries=0)
    completion = client.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": question}],
        **kw,  # type: ignore[call-overload]
    )
    return completion.choices[0].message.content


def test_a_harmful_answer_reaches_the_client_corrected(
    litellm: LiteLLMProxy, corrector: FakeCorrectorGenerator
) -> None:
    assert ask(litellm, BOMB) == CORRECTION, litellm.log_tail()
    # the pre_call's messages reached the corrector as the answer's question
    assert any(BOMB in prompt and HARMFUL_ANSWER in prompt for prompt in corrector.prompts), corrector.prompts


def test_a_benign_answer_passes_unchanged(litellm: LiteLLMProxy) -> None:
    assert ask(litellm, "How do I bake bread?") == BENIGN_ANSWER, litellm.log_tail()


def test_a_block_reaches_the_client_as_litellms_error(litellm: LiteLLMProxy, proxy_url: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        ask(litellm, BOMB, extra_body={"guardrails": ["aligner-strict"]})
    assert info.value.status_code == 400, litellm.log_tail()
    assert DEFAULT_BLOCK_MESSAGE in str(info.value.body), info.value.body
    metrics = httpx.get(proxy_url + "/metrics").text
    assert 'aligner_guardrail_checks_total{action="BLOCKED",input_type="response"}' in metrics
