"""The in-process transformers generator on a tiny random Llama with a real tokenizer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aligner_proxy.core.backends import BackendError
from aligner_proxy.core.backends.streaming import TokenStream
from aligner_proxy.core.backends.transformers import TransformersGenerator
from aligner_proxy.core.generation import ChatGenerator, ChatMessage, GenerationParams

GREEDY = GenerationParams(max_new_tokens=24)
PROMPTS = [
    "How do I bake bread?",
    "The quick brown fox",
    "Hello world! This is a much longer prompt than the others, to exercise left padding.",
    "I cannot help",
]


@pytest.fixture
async def generator(tiny_lm_dir: Path, tmp_path: Path) -> AsyncIterator[TransformersGenerator]:
    gen = TransformersGenerator.load(str(tiny_lm_dir), cache_dir=tmp_path, batch_wait_ms=20.0)
    yield gen
    await gen.aclose()


def _ascii_stop(text: str) -> tuple[str, int]:
    """A two-character printable stop string whose first occurrence is past the start of ``text``."""
    for i in range(2, len(text) - 1):
        candidate = text[i : i + 2]
        if candidate.isascii() and candidate.isprintable() and text.find(candidate) == i:
            return candidate, i
    raise AssertionError(f"no usable stop string in {text!r}")


def test_is_a_chat_generator(generator: TransformersGenerator, tiny_lm_dir: Path) -> None:
    assert isinstance(generator, ChatGenerator)
    assert generator.model_id == str(tiny_lm_dir)


async def test_concurrent_calls_are_batched_and_match_unbatched_output(
    generator: TransformersGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    run_batch = generator._run_batch

    def spy(key: object, prompts: list[str]) -> object:
        seen.append(len(prompts))
        return run_batch(key, prompts)  # type: ignore[arg-type]

    monkeypatch.setattr(generator, "_run_batch", spy)
    batched = await asyncio.gather(*(generator.generate([p], GREEDY) for p in PROMPTS))
    assert max(seen) > 1
    alone = [generator.generate_batch([p], GREEDY)[0] for p in PROMPTS]
    assert [out[0] for out in batched] == alone  # left padding does not change greedy output
    assert [g.prompt_tokens for g in alone] == [generator.count_tokens(p) for p in PROMPTS]


async def test_greedy_is_deterministic(generator: TransformersGenerator) -> None:
    first = await generator.generate(PROMPTS, GREEDY)
    second = await generator.generate(PROMPTS, GREEDY)
    assert first == second
    assert len({g.text for g in first}) > 1  # the prompts matter


async def test_seed_makes_sampling_reproducible_whatever_the_batch(generator: TransformersGenerator) -> None:
    sampled = GenerationParams(max_new_tokens=16, temperature=1.0, seed=7)
    alone = await generator.generate([PROMPTS[0]], sampled)
    together = await asyncio.gather(*(generator.generate([p], sampled) for p in PROMPTS))
    assert together[0] == alone
    other_seed = await generator.generate([PROMPTS[0]], GenerationParams(max_new_tokens=16, temperature=1.0, seed=8))
    assert other_seed != alone


async def test_finish_reason_length_when_max_new_tokens_is_hit(generator: TransformersGenerator) -> None:
    (result,) = await generator.generate([PROMPTS[0]], GenerationParams(max_new_tokens=5))
    assert result.finish_reason == "length"
    assert result.completion_tokens == 5


async def test_eos_ends_a_generation_with_finish_reason_stop(generator: TransformersGenerator) -> None:
    (full,) = await generator.generate([PROMPTS[0]], GREEDY)
    # Declare the model's second greedy token an end-of-sequence token.
    generator._eos_ids = {*generator._eos_ids, _nth_generated_token(generator, PROMPTS[0], 1)}
    (result,) = await generator.generate([PROMPTS[0]], GREEDY)
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 2  # one token, then the end-of-sequence token
    assert full.text.startswith(result.text) and len(result.text) < len(full.text)


def _nth_generated_token(generator: TransformersGenerator, prompt: str, n: int) -> int:
    import torch

    ids = torch.tensor([generator._encode(prompt)])
    with torch.inference_mode(), generator._loaded.activate() as model:
        out = model.generate(input_ids=ids, max_new_tokens=n + 1, do_sample=False, pad_token_id=generator._pad_id)
    return int(out[0, ids.shape[1] + n])


async def test_stop_strings_truncate_the_text(generator: TransformersGenerator) -> None:
    (full,) = await generator.generate([PROMPTS[1]], GREEDY)
    stop, at = _ascii_stop(full.text)
    (cut,) = await generator.generate([PROMPTS[1]], GenerationParams(max_new_tokens=24, stop=("never-there", stop)))
    assert cut.text == full.text[:at]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # generation itself stopped early


async def test_stream_concatenates_to_the_generated_text(generator: TransformersGenerator) -> None:
    for prompt in PROMPTS[:2]:
        (full,) = await generator.generate([prompt], GREEDY)
        deltas = [d async for d in generator.stream(prompt, GREEDY)]
        assert len(deltas) > 1
        assert "".join(deltas) == full.text


async def test_stream_respects_stop_strings(generator: TransformersGenerator) -> None:
    (full,) = await generator.generate([PROMPTS[1]], GREEDY)
    stop, at = _ascii_stop(full.text)
    params = GenerationParams(max_new_tokens=24, stop=(stop,))
    deltas = [d async for d in generator.stream(PROMPTS[1], params)]
    assert "".join(deltas) == full.text[:at]


async def test_leaving_a_stream_early_stops_the_generation(
    generator: TransformersGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    long = GenerationParams(max_new_tokens=300)
    (full,) = await generator.generate([PROMPTS[0]], long)
    assert full.completion_tokens > 200  # precondition: the model would keep going
    produced = 0
    put = TokenStream.put

    def counting_put(self: TokenStream, value: object) -> None:
        nonlocal produced
        produced += 1
        put(self, value)

    monkeypatch.setattr(TokenStream, "put", counting_put)
    stream = generator.stream(PROMPTS[0], long)
    assert await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    await generator._batcher.run_alone(lambda: None)  # wait until the worker is free again
    assert produced < 100


async def test_errors_reach_the_caller_in_generate_and_stream(generator: TransformersGenerator) -> None:
    with pytest.raises(BackendError, match="empty prompt"):
        await generator.generate([""], GREEDY)
    with pytest.raises(BackendError, match="empty prompt"):
        [d async for d in generator.stream("", GREEDY)]
    assert (await generator.generate(["Hi"], GenerationParams(max_new_tokens=2)))[0].completion_tokens == 2


def test_chat_rendering_uses_the_tokenizer_template(generator: TransformersGenerator) -> None:
    rendered = generator.render_chat([ChatMessage("system", "Be safe."), ChatMessage("user", "Hi")])
    assert rendered == (
        "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert {"<|im_start|>", "<|im_end|>", "<|pad|>", "<|bos|>"} <= set(generator.special_tokens)


def test_count_and_truncate_tokens(generator: TransformersGenerator) -> None:
    text = PROMPTS[2]
    n = generator.count_tokens(text)
    assert n > 8
    head = generator.truncate(text, 5, keep="head")
    tail = generator.truncate(text, 5, keep="tail")
    assert text.startswith(head) and text.endswith(tail)
    assert 0 < generator.count_tokens(head) <= 5 and 0 < generator.count_tokens(tail) <= 5
    assert generator.truncate(text, n) == text
    assert generator.truncate(text, 0) == ""


def test_generate_batch_works_without_an_event_loop(generator: TransformersGenerator) -> None:
    results = generator.generate_batch(PROMPTS, GenerationParams(max_new_tokens=4))
    assert [r.completion_tokens for r in results] == [4, 4, 4, 4]


def test_copy_speculation_leaves_greedy_output_unchanged(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lone greedy calls decode with copy speculation, exactly as without it, stop strings included; batches,
    sampling and a repetition penalty decode plainly."""
    from aligner_proxy.core.backends import speculation, transformers

    calls: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> list[int]:
        calls.append(kwargs["draft_tokens"])
        return speculation.speculative_greedy(*args, **kwargs)

    monkeypatch.setattr(transformers, "speculative_greedy", spy)
    plain = TransformersGenerator.load(str(tiny_lm_dir), cache_dir=tmp_path)
    copying = TransformersGenerator.load(str(tiny_lm_dir), cache_dir=tmp_path, prompt_lookup_tokens=4)
    params = GenerationParams(max_new_tokens=24)
    # Prompts that repeat themselves, so the drafts often match what the model goes on to write.
    prompts = [p + " " + p + " " + p for p in PROMPTS]
    for prompt in prompts:
        assert copying.generate_batch([prompt], params) == plain.generate_batch([prompt], params)
        # A stop string that the plain output contains ends both at the same place.
        text = plain.generate_batch([prompt], params)[0].text
        stop, at = _ascii_stop(text)
        stopping = GenerationParams(max_new_tokens=24, stop=(stop,))
        [cut] = copying.generate_batch([prompt], stopping)
        assert [cut] == plain.generate_batch([prompt], stopping) and cut.text == text[:at]
    assert calls == [4] * 2 * len(prompts)
    copying.generate_batch(prompts[:2], params)  # a batch of two
    copying.generate_batch(prompts[:1], GenerationParams(max_new_tokens=8, temperature=0.7, seed=1))
    copying.generate_batch(prompts[:1], GenerationParams(max_new_tokens=8, repetition_penalty=1.1))
    assert len(calls) == 2 * len(prompts)


async def test_the_loop_guard_cuts_a_looping_output_where_the_loop_closes(
    tiny_lm_dir: Path, tmp_path: Path, generator: TransformersGenerator
) -> None:
    """The tiny random model falls into loops under greedy decoding: the guard ends those outputs early, as a
    prefix of the plain output, the same whole, streamed, batched or with copy speculation."""
    plain = GenerationParams(max_new_tokens=120)
    guarded = GenerationParams(max_new_tokens=120, stop_loops=True)
    unguarded = generator.generate_batch(PROMPTS, plain)
    cut = generator.generate_batch(PROMPTS, guarded)
    shortened = 0
    for full, short in zip(unguarded, cut, strict=True):
        assert full.text.startswith(short.text)
        if short.completion_tokens < full.completion_tokens:
            shortened += 1
            assert short.finish_reason == "loop"
        else:
            assert short == full  # no loop: nothing changes
    assert shortened >= 2  # the test means something only if some outputs looped
    copying = TransformersGenerator.load(str(tiny_lm_dir), cache_dir=tmp_path, prompt_lookup_tokens=4)
    for prompt, short in zip(PROMPTS, cut, strict=True):
        assert copying.generate_batch([prompt], guarded) == [short]  # lone call: speculation may overshoot
        streamed = "".join([d async for d in generator.stream(prompt, guarded)])
        assert streamed == short.text


def test_stop_string_criteria_are_built_once_per_set_and_kept_in_bounds(generator: TransformersGenerator) -> None:
    from aligner_proxy.core.backends.transformers import STOP_CRITERIA_KEPT

    first = generator._stop_criterion(("\nUser:",))
    assert generator._stop_criterion(("\nUser:",)) is first
    for i in range(STOP_CRITERIA_KEPT + 8):
        generator._stop_criterion((f"stop-{i}",))
    assert len(generator._stop_criteria) == STOP_CRITERIA_KEPT
    assert ("\nUser:",) not in generator._stop_criteria  # the least recently used went first
