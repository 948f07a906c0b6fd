"""The Aligner corrector: rewrite an answer given its question, through any :class:`TextGenerator`.

Aligner (Ji et al., NeurIPS 2024) is a small seq2seq model stacked on any
upstream model: it reads (question, answer) in a fixed prompt and writes a
more helpful and harmless answer. :class:`Corrector` is the one object the
proxy, the batch tools, the trainers' evaluation loops and the evals use to do
that, so they all render the same prompt (:mod:`aligner_proxy.core.prompt`), apply
the same budgets and clean the output the same way. It knows nothing of HTTP
and nothing of torch: the model lives behind the generator.

Its prompt side, :class:`CorrectionPrompter`, needs only a tokenizer
(:class:`~aligner_proxy.core.prompt.PromptTokenizer`): the trainers use it to
write training rows in the proxy's exact prompt without loading a model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from aligner_proxy.core.generation import ChatMessage, FinishReason, GenerationParams, TextGenerator
from aligner_proxy.core.prompt import Keep, PromptRenderer, PromptTokenizer
from aligner_proxy.core.template import AlignerTemplate

logger = logging.getLogger(__name__)

DEFAULT_PARAMS = GenerationParams(max_new_tokens=384, temperature=0.0)
"""Greedy: a correction should be reproducible, and the Aligner paper decodes greedily."""


BUDGET_MARGIN = 32
"""Tokens a correction may add beyond ``length_ratio`` × its answer (a refusal of a one-line answer)."""

BUDGET_STEP = 64
"""Budgets are rounded up to this step: generation batches are keyed by their decoding parameters."""


@dataclass
class CorrectionInput:
    """One thing to correct: a question (plain text or a chat history) and the answer to it."""

    question: str | list[ChatMessage]
    answer: str


@dataclass
class Correction:
    """The corrector's rewrite. ``text`` is cleaned (see :func:`aligner_proxy.core.prompt.clean_correction`)
    and may be empty when the model wrote nothing usable; ``raw_text`` is what the model wrote."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    raw_text: str


class CorrectionPrompter:
    """The corrector's inputs: the Aligner prompt of an item within its token budgets, from a tokenizer alone.

    ``max_question_tokens`` / ``max_answer_tokens`` bound the two fields of the
    prompt (question tail and answer head are kept); the tokenizer's special
    tokens are neutralised in the fields. :class:`Corrector` is one, on its
    generator's tokenizer; the trainers build one on a bare tokenizer, so that
    their rows are the prompts the proxy sends.
    """

    def __init__(
        self,
        tokenizer: PromptTokenizer,
        *,
        template: AlignerTemplate | None = None,
        max_question_tokens: int = 512,
        max_answer_tokens: int = 1024,
    ) -> None:
        if max_question_tokens < 1 or max_answer_tokens < 1:
            raise ValueError("max_question_tokens and max_answer_tokens must be >= 1")
        self.tokenizer = tokenizer
        self.renderer = PromptRenderer(template, tokenizer.special_tokens)
        self.max_question_tokens = max_question_tokens
        self.max_answer_tokens = max_answer_tokens

    def build_prompt(self, item: CorrectionInput) -> str:
        """The exact prompt the corrector model sees for ``item``."""
        t = self.tokenizer
        question = item.question
        if not isinstance(question, str):
            question = self.renderer.render_conversation(
                question, count_tokens=t.count_tokens, truncate=t.truncate, max_tokens=self.max_question_tokens
            )
        return self.renderer.render(
            question,
            item.answer,
            count_tokens=t.count_tokens,
            truncate=t.truncate,
            max_question_tokens=self.max_question_tokens,
            max_answer_tokens=self.max_answer_tokens,
        )


class Corrector(CorrectionPrompter):
    """Render Aligner prompts, run them through ``generator`` and clean the corrections.

    The prompt side is :class:`CorrectionPrompter` on the generator's own
    tokenizer: its ``count_tokens`` and ``truncate``, and a ``special_tokens:
    list[str]`` attribute when the generator has one (neutralised in inputs
    and cut from outputs). ``params`` defaults to :data:`DEFAULT_PARAMS`; the
    template's role labels are always added to its stop strings.
    """

    def __init__(
        self,
        generator: TextGenerator,
        *,
        template: AlignerTemplate | None = None,
        params: GenerationParams | None = None,
        max_question_tokens: int = 512,
        max_answer_tokens: int = 1024,
        length_ratio: float | None = None,
    ) -> None:
        super().__init__(
            _GeneratorTokenizer(generator),
            template=template,
            max_question_tokens=max_question_tokens,
            max_answer_tokens=max_answer_tokens,
        )
        self.generator = generator
        self.length_ratio = length_ratio
        base = params or DEFAULT_PARAMS
        stops = tuple(dict.fromkeys((*base.stop, *self.renderer.generation_stops)))
        self.params = replace(base, stop=stops)

    @property
    def model_id(self) -> str:
        return self.generator.model_id

    def params_for(self, items: list[CorrectionInput]) -> GenerationParams:
        """Decoding for ``items``: with ``length_ratio``, a token budget that fits the longest answer
        (ratio × its tokens + a margin, in steps of :data:`BUDGET_STEP` so that corrections of answers of
        similar length still share batches), never above ``params.max_new_tokens``. A correction that
        loops stops near its answer's length instead of running to the cap."""
        if self.length_ratio is None:
            return self.params
        longest = max(min(self.tokenizer.count_tokens(item.answer), self.max_answer_tokens) for item in items)
        budget = math.ceil((self.length_ratio * longest + BUDGET_MARGIN) / BUDGET_STEP) * BUDGET_STEP
        return replace(self.params, max_new_tokens=min(self.params.max_new_tokens, budget))

    async def correct(self, items: list[CorrectionInput]) -> list[Correction]:
        """Correct every item with one batched ``generate`` call; one :class:`Correction` per item, in order."""
        if not items:
            return []
        prompts = [self.build_prompt(item) for item in items]
        generations = await self.generator.generate(prompts, self.params_for(items))
        if len(generations) != len(prompts):
            raise RuntimeError(f"{self.model_id} returned {len(generations)} generations for {len(prompts)} prompts")
        corrections = [
            Correction(
                text=self.renderer.clean_correction(g.text),
                prompt_tokens=g.prompt_tokens,
                completion_tokens=g.completion_tokens,
                finish_reason=g.finish_reason,
                raw_text=g.text,
            )
            for g in generations
        ]
        logger.debug(
            "corrected %d items with %s (%d prompt, %d completion tokens)",
            len(items),
            self.model_id,
            sum(c.prompt_tokens for c in corrections),
            sum(c.completion_tokens for c in corrections),
        )
        return corrections

    async def stream(self, item: CorrectionInput) -> AsyncGenerator[str, None]:
        """Yield cleaned text deltas of one correction as the model writes them.

        Their concatenation equals :attr:`Correction.text` for the same
        generation. Generation stops early once a stop marker shows up.
        """
        cleaner = self.renderer.stream_cleaner()
        deltas = self.generator.stream(self.build_prompt(item), self.params_for([item]))
        try:
            async for delta in deltas:
                piece = cleaner.feed(delta)
                if piece:
                    yield piece
                if cleaner.done:
                    break
            rest = cleaner.finish()
            if rest:
                yield rest
        finally:
            if isinstance(deltas, AsyncGenerator):
                await deltas.aclose()


class _GeneratorTokenizer:
    """A generator's own tokenizer as a :class:`PromptTokenizer`; a generator without ``special_tokens`` has none."""

    def __init__(self, generator: TextGenerator) -> None:
        self._generator = generator
        self.special_tokens = _special_tokens(generator)

    def count_tokens(self, text: str) -> int:
        return self._generator.count_tokens(text)

    def truncate(self, text: str, max_tokens: int, keep: Keep = "head") -> str:
        return self._generator.truncate(text, max_tokens, keep)


def _special_tokens(generator: TextGenerator) -> list[str]:
    tokens = getattr(generator, "special_tokens", None)
    if tokens is None:
        return []
    if not isinstance(tokens, list | tuple) or not all(isinstance(t, str) for t in tokens):
        logger.warning("ignoring %s.special_tokens: expected a list of strings", type(generator).__name__)
        return []
    return list(tokens)


def question_text(question: object) -> str:
    """The text a scorer sees as the prompt: the question, or a chat's last user turn."""
    if isinstance(question, str):
        return question
    # A chat history: score against the last user turn, which is what the answer answers.
    turns = [getattr(message, "content", "") for message in question if getattr(message, "role", "") == "user"]  # type: ignore[attr-defined]
    return str(turns[-1]) if turns else ""
