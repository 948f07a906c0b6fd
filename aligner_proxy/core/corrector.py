"""The Aligner corrector: rewrite an answer given its question, through any :class:`TextGenerator`.

Aligner (Ji et al., NeurIPS 2024) is a small seq2seq model stacked on any
upstream model: it reads (question, answer) in a fixed prompt and writes a
more helpful and harmless answer. :class:`Corrector` is the one object the
proxy, the batch tools, the trainers' evaluation loops and the evals use to do
that, so they all render the same prompt (:mod:`aligner_proxy.core.prompt`), apply
the same budgets and clean the output the same way. It knows nothing of HTTP
and nothing of torch: the model lives behind the generator.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from aligner_proxy.core.generation import ChatMessage, FinishReason, GenerationParams, TextGenerator
from aligner_proxy.core.prompt import AlignerTemplate, PromptRenderer

logger = logging.getLogger(__name__)

DEFAULT_PARAMS = GenerationParams(max_new_tokens=384, temperature=0.0)
"""Greedy: a correction should be reproducible, and the Aligner paper decodes greedily."""


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


class Corrector:
    """Render Aligner prompts, run them through ``generator`` and clean the corrections.

    ``max_question_tokens`` / ``max_answer_tokens`` bound the two fields of the
    prompt (question tail and answer head are kept). ``params`` defaults to
    :data:`DEFAULT_PARAMS`; the template's role labels are always added to its
    stop strings. A ``special_tokens: list[str]`` attribute on the generator,
    when present, is neutralised in inputs and cut from outputs.
    """

    def __init__(
        self,
        generator: TextGenerator,
        *,
        template: AlignerTemplate | None = None,
        params: GenerationParams | None = None,
        max_question_tokens: int = 512,
        max_answer_tokens: int = 1024,
    ) -> None:
        if max_question_tokens < 1 or max_answer_tokens < 1:
            raise ValueError("max_question_tokens and max_answer_tokens must be >= 1")
        self.generator = generator
        self.renderer = PromptRenderer(template, _special_tokens(generator))
        base = params or DEFAULT_PARAMS
        stops = tuple(dict.fromkeys((*base.stop, *self.renderer.generation_stops)))
        self.params = replace(base, stop=stops)
        self.max_question_tokens = max_question_tokens
        self.max_answer_tokens = max_answer_tokens

    @property
    def model_id(self) -> str:
        return self.generator.model_id

    def build_prompt(self, item: CorrectionInput) -> str:
        """The exact prompt the corrector model sees for ``item``."""
        g = self.generator
        question = item.question
        if not isinstance(question, str):
            question = self.renderer.render_conversation(
                question, count_tokens=g.count_tokens, truncate=g.truncate, max_tokens=self.max_question_tokens
            )
        return self.renderer.render(
            question,
            item.answer,
            count_tokens=g.count_tokens,
            truncate=g.truncate,
            max_question_tokens=self.max_question_tokens,
            max_answer_tokens=self.max_answer_tokens,
        )

    async def correct(self, items: list[CorrectionInput]) -> list[Correction]:
        """Correct every item with one batched ``generate`` call; one :class:`Correction` per item, in order."""
        if not items:
            return []
        prompts = [self.build_prompt(item) for item in items]
        generations = await self.generator.generate(prompts, self.params)
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
        deltas = self.generator.stream(self.build_prompt(item), self.params)
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
