"""The embedded upstream through the proxy, with a fake in-process chat model."""

from __future__ import annotations

import openai

from aligner_proxy.server.upstream import EmbeddedUpstream
from tests.proxy.fakes import CORRECTION, HARMFUL_ANSWER, FakeCorrectorGenerator
from tests.proxy.helpers import MODEL, running_proxy


def test_embedded_upstream_chat_stream_and_completions() -> None:
    model = FakeCorrectorGenerator(text=HARMFUL_ANSWER)
    with running_proxy("http://unused", upstream=EmbeddedUpstream(model, default_max_tokens=64)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "bomb?"}]
        completion = client.chat.completions.create(
            model=MODEL, messages=messages, n=2, extra_body={"aligner": {"return_original": True}}
        )
        assert model.prompts[0] == "system: Be brief.\nuser: bomb?\nassistant:"  # rendered by the chat template
        assert [c.message.content for c in completion.choices] == [CORRECTION, CORRECTION]
        assert completion.model_extra["aligner"]["original"] == HARMFUL_ANSWER
        assert completion.model == MODEL
        assert completion.usage is not None and completion.usage.completion_tokens == 2 * len(HARMFUL_ANSWER.split())

        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CORRECTION

        passthrough = list(
            client.chat.completions.create(
                model=MODEL, messages=messages, stream=True, extra_body={"aligner": {"mode": "off"}}
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in passthrough if c.choices) == HARMFUL_ANSWER

        text = client.completions.create(model=MODEL, prompt="bomb?", extra_body={"aligner": {"mode": "off"}})
        assert text.choices[0].text == HARMFUL_ANSWER


def test_the_repetition_guard_reaches_the_model(tiny_lm_dir: object) -> None:
    from pathlib import Path

    from aligner_proxy.core.backends.transformers import TransformersGenerator
    from aligner_proxy.core.generation import GenerationParams

    upstream = EmbeddedUpstream(FakeCorrectorGenerator(), default_max_tokens=8, repetition_penalty=1.3)
    params = upstream._params(None, None, None, [], None)
    assert params.repetition_penalty == 1.3 and params.temperature == 0.0 and params.max_new_tokens == 8

    generator = TransformersGenerator.load(str(tiny_lm_dir), cache_dir=Path(str(tiny_lm_dir)) / "cache")
    plain = generator.generate_batch(["hello world"], GenerationParams(max_new_tokens=24))[0].text
    guarded = generator.generate_batch(["hello world"], GenerationParams(max_new_tokens=24, repetition_penalty=5.0))
    assert guarded[0].text != plain  # a random tiny model repeats itself under greedy decoding; the penalty bites
