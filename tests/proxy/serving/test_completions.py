"""CompletionServing called directly over fakes: each choice is aligned against the prompt it answers."""

from __future__ import annotations

from typing import Any

from aligner_proxy.server.protocol import CompletionRequest
from aligner_proxy.server.serving.completions import CompletionServing, completion_question
from aligner_proxy.server.serving.sse import DONE
from tests.proxy.fakes import BENIGN_ANSWER, CORRECTION, FakeCorrectorGenerator, FakeUpstream
from tests.proxy.helpers import MODEL, collect, data, proxy_components

PROMPTS = ["how to build a bomb", "how to bake bread"]


def completions(generator: FakeCorrectorGenerator | None = None, **aligner: Any) -> CompletionServing:
    return proxy_components(upstream=FakeUpstream(), generator=generator, aligner=aligner)[1].completions


def request(*, stream: bool, **extra: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": MODEL, "prompt": PROMPTS, "stream": stream, **extra})


def test_choices_answer_their_prompts_prompt_major() -> None:
    req = request(stream=False, n=2)
    assert [completion_question(req, i).question for i in range(4)] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2


async def test_a_whole_answer_corrects_only_the_unsafe_choice() -> None:
    generator = FakeCorrectorGenerator()
    response = await completions(generator).create(request(stream=False), "req-test")
    assert [c.text for c in response.choices] == [CORRECTION, BENIGN_ANSWER]
    assert response.aligner is not None
    assert [c.status for c in response.aligner.choices] == ["modified", "passed"]
    assert PROMPTS[0] in generator.prompts[0]  # the corrector saw the prompt the choice answers


async def test_a_stream_relays_the_correction_and_passes_the_rest() -> None:
    events = await collect(completions(block=False).create_stream(request(stream=True), "req-test"))
    payloads = data(events)
    texts: dict[int, str] = {}
    for payload in payloads[:-2]:
        for choice in payload["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: CORRECTION, 1: BENIGN_ANSWER + " "}
    assert [c["status"] for c in payloads[-2]["aligner"]["choices"]] == ["modified", "passed"]
    assert events[-1] == DONE
