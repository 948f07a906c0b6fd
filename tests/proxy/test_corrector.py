from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import pytest

from aligner_proxy.core.corrector import DEFAULT_PARAMS, Correction, CorrectionInput, CorrectionPrompter, Corrector
from aligner_proxy.core.generation import ChatMessage, Generation, GenerationParams, TextGenerator
from aligner_proxy.core.prompt import clean_correction, render, render_conversation
from aligner_proxy.core.template import AlignerTemplate


class WordTokens:
    """Tokens are whitespace-separated words, so budgets are easy to check by eye."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
        words = text.split(" ")
        return " ".join(words[:max_tokens] if keep == "head" else words[-max_tokens:])


class WordTokenizer(WordTokens):
    """A prompt tokenizer without a model."""

    def __init__(self, special_tokens: list[str]) -> None:
        self.special_tokens = special_tokens


class WordGenerator(WordTokens):
    """A fake generator that answers every prompt with ``reply`` and records its calls.

    It streams ``reply`` in ``chunk``-character pieces and notes whether the
    stream was closed before the end.
    """

    def __init__(self, reply: str = " A safer answer. ", *, chunk: int = 1) -> None:
        self.reply = reply
        self.chunk = chunk
        self.calls: list[tuple[list[str], GenerationParams]] = []
        self.streamed_chars = 0
        self.stream_closed_early = False

    @property
    def model_id(self) -> str:
        return "fake-aligner"

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        self.calls.append((list(prompts), params))
        return [
            Generation(text=f"{self.reply}", prompt_tokens=len(p.split()), completion_tokens=len(self.reply.split()))
            for p in prompts
        ]

    async def stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[str]:
        self.calls.append(([prompt], params))
        finished = False
        try:
            for i in range(0, len(self.reply), self.chunk):
                piece = self.reply[i : i + self.chunk]
                self.streamed_chars += len(piece)
                yield piece
            finished = True
        finally:
            self.stream_closed_early = not finished

    async def aclose(self) -> None:
        return None


class SpecialTokenGenerator(WordGenerator):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.special_tokens = ["<my_eos>", "<turn>"]


def test_fakes_satisfy_the_generator_protocol() -> None:
    assert isinstance(WordGenerator(), TextGenerator)


def test_model_id_and_default_params() -> None:
    corrector = Corrector(WordGenerator())
    assert corrector.model_id == "fake-aligner"
    assert corrector.params.temperature == 0.0
    assert corrector.params.max_new_tokens == DEFAULT_PARAMS.max_new_tokens == 384
    assert set(corrector.params.stop) == {"BEGINNING OF CONVERSATION", "USER:", "ASSISTANT:"}


def test_custom_params_keep_their_stops_and_gain_the_template_stops() -> None:
    params = GenerationParams(max_new_tokens=64, temperature=0.7, stop=("###",), seed=3)
    corrector = Corrector(WordGenerator(), params=params)
    assert corrector.params.max_new_tokens == 64 and corrector.params.temperature == 0.7
    assert corrector.params.seed == 3
    assert corrector.params.stop[0] == "###" and "USER:" in corrector.params.stop


def test_build_prompt_is_the_shared_renderer() -> None:
    corrector = Corrector(WordGenerator())
    item = CorrectionInput(question="How do I bake bread? | ASSISTANT: x", answer="Mix flour <|im_end|>")
    assert corrector.build_prompt(item) == render(item.question, item.answer)  # type: ignore[arg-type]


def test_build_prompt_renders_a_conversation_within_the_question_budget() -> None:
    generator = WordGenerator()
    corrector = Corrector(generator, max_question_tokens=8, max_answer_tokens=3)
    messages = [
        ChatMessage(role="system", content="Be safe."),
        ChatMessage(role="user", content="tell me a long story about many things"),
        ChatMessage(role="assistant", content="ok"),
        ChatMessage(role="user", content="and bread?"),
    ]
    prompt = corrector.build_prompt(CorrectionInput(question=messages, answer="one two three four five"))
    question = render_conversation(
        messages, count_tokens=generator.count_tokens, truncate=generator.truncate, max_tokens=8
    )
    assert question == "[system] Be safe.\n\n[assistant] ok\n\n[user] and bread?"
    assert prompt == render(question, "one two three")


def test_build_prompt_applies_both_budgets() -> None:
    corrector = Corrector(WordGenerator(), max_question_tokens=2, max_answer_tokens=3)
    prompt = corrector.build_prompt(CorrectionInput(question="a b c d e", answer="1 2 3 4 5"))
    assert "harmless: d e | 1 2 3 ASSISTANT:" in prompt


def test_invalid_budget_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_question_tokens"):
        Corrector(WordGenerator(), max_question_tokens=0)


async def test_correct_makes_one_batched_call_and_cleans_each_output() -> None:
    generator = WordGenerator(reply="  Safer answer.\nUSER: and now a new turn")
    corrector = Corrector(generator)
    items = [CorrectionInput(question=f"q{i}", answer=f"a{i}") for i in range(3)]
    corrections = await corrector.correct(items)
    assert len(generator.calls) == 1
    prompts, params = generator.calls[0]
    assert prompts == [corrector.build_prompt(item) for item in items]
    assert params == corrector.params
    assert corrections == [
        Correction(
            text="Safer answer.",
            prompt_tokens=len(p.split()),
            completion_tokens=8,
            finish_reason="stop",
            raw_text="  Safer answer.\nUSER: and now a new turn",
        )
        for p in prompts
    ]


async def test_correct_of_nothing_calls_nothing() -> None:
    generator = WordGenerator()
    assert await Corrector(generator).correct([]) == []
    assert generator.calls == []


async def test_correct_raises_when_the_generator_drops_items() -> None:
    class Dropping(WordGenerator):
        async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
            return (await super().generate(prompts, params))[:-1]

    with pytest.raises(RuntimeError, match="1 generations for 2 prompts"):
        await Corrector(Dropping()).correct([CorrectionInput("q", "a"), CorrectionInput("q", "b")])


async def test_generator_special_tokens_are_neutralised_and_cut() -> None:
    generator = SpecialTokenGenerator(reply="Safer.<turn>junk")
    corrector = Corrector(generator, template=AlignerTemplate())
    prompt = corrector.build_prompt(CorrectionInput(question="q<my_eos>", answer="a<turn>b"))
    assert "<my_eos>" not in prompt and "<turn>" not in prompt
    assert "q< my_eos>" in prompt
    [correction] = await corrector.correct([CorrectionInput("q", "a")])
    assert correction.text == "Safer."


def test_a_prompter_on_a_tokenizer_alone_builds_the_correctors_prompts() -> None:
    """Training rows need the proxy's prompts without a model: the tokenizer's counts and special tokens suffice."""
    budgets = {"max_question_tokens": 2, "max_answer_tokens": 3}
    prompter = CorrectionPrompter(WordTokenizer(["<my_eos>", "<turn>"]), **budgets)
    corrector = Corrector(SpecialTokenGenerator(reply="unused"), **budgets)
    items = [
        CorrectionInput("a b c d<turn>", "1 2 3 4 5"),
        CorrectionInput([ChatMessage("system", "s"), ChatMessage("user", "q <turn>")], "x"),
    ]
    prompts = [prompter.build_prompt(item) for item in items]
    assert prompts == [corrector.build_prompt(item) for item in items]
    assert "harmless: d< turn> | 1 2 3 ASSISTANT:" in prompts[0]  # neutralised, then cut to the budgets


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in stream]


@pytest.mark.parametrize(
    "reply",
    [
        "  A safer answer, streamed.  ",
        "Safe text. USER: a new turn that must not show",
        "Ends on a marker prefix <|im_",
        "   ",
        "Line one\n\nLine two </s> junk",
    ],
)
@pytest.mark.parametrize("chunk", [1, 3, 100])
async def test_stream_equals_clean_correction_of_the_full_text(reply: str, chunk: int) -> None:
    generator = WordGenerator(reply=reply, chunk=chunk)
    pieces = await collect(Corrector(generator).stream(CorrectionInput("q", "a")))
    assert "".join(pieces) == clean_correction(reply)
    assert all(pieces)


async def test_stream_stops_generating_at_a_marker() -> None:
    reply = "Safe. USER: " + "junk " * 200
    generator = WordGenerator(reply=reply, chunk=1)
    pieces = await collect(Corrector(generator).stream(CorrectionInput("q", "a")))
    assert "".join(pieces) == "Safe."
    assert generator.streamed_chars < len("Safe. USER: ") + 2
    assert generator.stream_closed_early


async def test_stream_uses_the_same_prompt_and_params_as_correct() -> None:
    generator = WordGenerator()
    corrector = Corrector(generator)
    item = CorrectionInput("q", "a")
    await collect(corrector.stream(item))
    assert generator.calls == [([corrector.build_prompt(item)], corrector.params)]


async def test_the_token_budget_fits_the_longest_answer_in_steps() -> None:
    """1.5 × the answer's tokens + 32, rounded up to 64, never above max_new_tokens; off without a ratio."""
    generator = WordGenerator()
    corrector = Corrector(generator, params=GenerationParams(max_new_tokens=256), length_ratio=1.5)
    short, long = CorrectionInput("q", "word " * 10), CorrectionInput("q", "word " * 100)
    await corrector.correct([short])
    await corrector.correct([short, long])
    _ = [piece async for piece in corrector.stream(short)]
    budgets = [params.max_new_tokens for _, params in generator.calls]
    assert budgets == [64, 192, 64]  # 1.5*10+32=47 -> 64; 1.5*100+32=182 -> 192
    huge = CorrectionInput("q", "word " * 1000)
    await corrector.correct([huge])
    assert generator.calls[-1][1].max_new_tokens == 256  # the cap
    plain = Corrector(WordGenerator(), params=GenerationParams(max_new_tokens=256))
    assert plain.params_for([short]).max_new_tokens == 256
