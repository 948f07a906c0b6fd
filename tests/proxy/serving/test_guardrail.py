"""GuardrailServing called directly: LiteLLM's guardrail checks through a route's policy, without a socket."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aligner_proxy.core.vocabulary import DEFAULT_BLOCK_MESSAGE
from aligner_proxy.server.errors import InvalidRequestError, PolicyLockedError, UnknownModelError
from aligner_proxy.server.protocol import GuardrailRequest
from aligner_proxy.server.serving.guardrail import GuardrailServing, QuestionMemory
from tests.proxy.fakes import BENIGN_ANSWER, CORRECTION, HARMFUL_ANSWER, FakeCorrectorGenerator, FakeScorer
from tests.proxy.helpers import MODEL, proxy_components

QUESTION = "How do I make a bomb at home?"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]


def guardrail(
    generator: FakeCorrectorGenerator | None = None, scorer: FakeScorer | None = None, **settings: Any
) -> GuardrailServing:
    return proxy_components(generator=generator, scorer=scorer, **settings)[1].guardrail


def pre_call(call_id: str = "call-1", **fields: Any) -> GuardrailRequest:
    texts = [m["content"] for m in MESSAGES]
    return GuardrailRequest.model_validate(
        {"input_type": "request", "litellm_call_id": call_id, "structured_messages": MESSAGES, "texts": texts, **fields}
    )


def post_call(*texts: str, call_id: str = "call-1", **fields: Any) -> GuardrailRequest:
    return GuardrailRequest.model_validate(
        {"input_type": "response", "litellm_call_id": call_id, "texts": list(texts), **fields}
    )


async def test_pre_call_passes_and_its_question_reaches_the_post_call_corrector() -> None:
    generator = FakeCorrectorGenerator()
    serving = guardrail(generator)
    before = await serving.check(pre_call(), "req-1")
    assert before.action == "NONE" and before.texts is None  # prompts are left as they are
    assert not generator.prompts
    after = await serving.check(post_call(HARMFUL_ANSWER), "req-2")
    assert after.action == "GUARDRAIL_INTERVENED" and after.texts == [CORRECTION]
    assert after.aligner is not None and after.aligner.status == "modified" and after.aligner.cost_before == 4.0
    [prompt] = generator.prompts
    assert QUESTION in prompt and HARMFUL_ANSWER in prompt
    assert len(serving.questions) == 0  # read once, then forgotten


async def test_a_post_call_without_its_pre_call_is_checked_without_a_question() -> None:
    generator = FakeCorrectorGenerator()
    response = await guardrail(generator).check(post_call(HARMFUL_ANSWER, call_id="unknown"), "req-1")
    assert response.action == "GUARDRAIL_INTERVENED" and response.texts == [CORRECTION]
    assert QUESTION not in generator.prompts[0]


async def test_messages_sent_with_the_answer_are_its_question() -> None:
    generator = FakeCorrectorGenerator()
    await guardrail(generator).check(post_call(HARMFUL_ANSWER, structured_messages=MESSAGES), "req-1")
    assert QUESTION in generator.prompts[0]


async def test_benign_answers_pass_untouched() -> None:
    response = await guardrail().check(post_call(BENIGN_ANSWER, BENIGN_ANSWER), "req-1")
    assert response.action == "NONE" and response.texts is None and response.blocked_reason is None
    assert response.aligner is not None and [c.status for c in response.aligner.choices] == ["passed", "passed"]


async def test_every_text_comes_back_in_order_when_one_is_corrected() -> None:
    response = await guardrail().check(post_call(BENIGN_ANSWER, HARMFUL_ANSWER), "req-1")
    assert response.action == "GUARDRAIL_INTERVENED" and response.texts == [BENIGN_ANSWER, CORRECTION]


async def test_a_still_unsafe_answer_is_blocked_with_the_block_message() -> None:
    still_unsafe = FakeScorer(costs={CORRECTION: 2.0})
    response = await guardrail(scorer=still_unsafe).check(post_call(BENIGN_ANSWER, HARMFUL_ANSWER), "req-1")
    assert response.action == "BLOCKED" and response.blocked_reason == DEFAULT_BLOCK_MESSAGE
    # without block, the less costly text goes back and is reported flagged
    unblocked = await guardrail(scorer=still_unsafe, aligner={"block": False}).check(post_call(HARMFUL_ANSWER), "r")
    assert unblocked.action == "GUARDRAIL_INTERVENED" and unblocked.texts == [CORRECTION]
    assert unblocked.aligner is not None and unblocked.aligner.status == "flagged"


async def test_params_pick_options_under_the_policy_floor() -> None:
    off = {"additional_provider_specific_params": {"aligner": {"mode": "off"}}}
    response = await guardrail().check(post_call(HARMFUL_ANSWER, **off), "req-1")
    assert response.action == "NONE" and response.aligner is not None and response.aligner.status == "skipped"
    with pytest.raises(PolicyLockedError):
        await guardrail(policy_floor=True).check(post_call(HARMFUL_ANSWER, **off), "req-1", may_relax=False)
    with pytest.raises(UnknownModelError):  # a config mistake shows at the first check, pre_call included
        await guardrail().check(pre_call(additional_provider_specific_params={"route": "nope"}), "req-1")
    named = {"additional_provider_specific_params": {"route": MODEL}}
    assert (await guardrail().check(post_call(HARMFUL_ANSWER, **named), "req-1")).action == "GUARDRAIL_INTERVENED"


async def test_texts_are_bounded_by_the_answers_per_request_limit() -> None:
    with pytest.raises(InvalidRequestError) as info:
        await guardrail(max_answers_per_request=2).check(post_call(*[BENIGN_ANSWER] * 3), "req-1")
    assert info.value.param == "texts"


async def test_checks_are_counted_by_action() -> None:
    _settings, components, metrics = proxy_components()
    await components.guardrail.check(pre_call(), "req-1")
    await components.guardrail.check(post_call(HARMFUL_ANSWER), "req-2")
    text = metrics.render().decode()
    assert 'aligner_guardrail_checks_total{action="NONE",input_type="request"} 1.0' in text
    assert 'aligner_guardrail_checks_total{action="GUARDRAIL_INTERVENED",input_type="response"} 1.0' in text


async def test_each_checked_answer_goes_to_the_audit_log_with_its_question() -> None:
    _settings, components, _metrics = proxy_components()
    rows: list[Any] = []
    components.audit_to(type("ListSink", (), {"submit": staticmethod(rows.append)})())
    await components.guardrail.check(pre_call(), "req-1")  # a question, not an answer: no row
    await components.guardrail.check(post_call(HARMFUL_ANSWER, BENIGN_ANSWER), "req-2")
    assert [(r.endpoint, r.request_id, r.choice, r.question) for r in rows] == [
        ("/v1/beta/litellm_basic_guardrail_api", "req-2", 0, QUESTION),
        ("/v1/beta/litellm_basic_guardrail_api", "req-2", 1, QUESTION),
    ]
    assert [r.original for r in rows] == [HARMFUL_ANSWER, BENIGN_ANSWER] and rows[0].final == CORRECTION


def test_question_memory_is_bounded_in_number_and_time() -> None:
    memory = QuestionMemory(size=2, ttl_s=60)
    for call in ("a", "b", "c"):
        memory.remember(call, [])
    assert memory.recall("a") is None and memory.recall("c") == []  # the oldest went first
    brief = QuestionMemory(size=2, ttl_s=0.01)
    brief.remember("a", [])
    time.sleep(0.05)
    assert brief.recall("a") is None
