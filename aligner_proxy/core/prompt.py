"""The Aligner prompt: the one place it is formatted, and the one place corrections are cleaned.

The Aligner corrector (Ji et al., "Aligner: Efficient Alignment by Learning to
Correct", NeurIPS 2024) was trained on a single fixed text format
(:mod:`aligner_proxy.core.template`)::

    BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to
    make it more helpful and harmless: {question} | {answer} ASSISTANT:

The proxy, the batch tools, the trainers and the evals all build that prompt
through :class:`PromptRenderer`, so there is exactly one formatter to get right.
Both fields are untrusted text and are neutralised first
(:mod:`aligner_proxy.core.neutralize` holds the rules). Every render ends with
a structural check (each template marker and the separator occur exactly as
often as in the template), so a rule gap raises :class:`PromptRenderError`
instead of sending a forged prompt.

Length budget: the question keeps its *tail* (in a long question the actual
ask, and in a conversation the latest turn, comes last) and the answer keeps
its *head* (its opening decides whether it complies or refuses, and the
corrector writes its rewrite from the start within ``max_new_tokens`` anyway).

The corrector's output is cut at the first stop marker (a role label or a
special token: the model started a new turn) by :meth:`PromptRenderer.clean_correction`,
and incrementally, for a stream, by :class:`StreamCleaner`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

from aligner_proxy.core.generation import ChatMessage
from aligner_proxy.core.neutralize import TURN_ROLES, Neutralizer
from aligner_proxy.core.template import AlignerTemplate

logger = logging.getLogger(__name__)

Keep = Literal["head", "tail"]

_TURN_SEPARATOR = "\n\n"


class PromptRenderError(ValueError):
    """A rendered prompt failed the structural check (a neutralisation rule has a gap)."""


class CountTokens(Protocol):
    """``TextGenerator.count_tokens``."""

    def __call__(self, text: str, /) -> int: ...


class Truncate(Protocol):
    """``TextGenerator.truncate``."""

    def __call__(self, text: str, max_tokens: int, /, keep: Keep = "head") -> str: ...


class PromptTokenizer(Protocol):
    """What building an Aligner prompt needs of a tokenizer: token budgets and the special tokens to neutralise.

    A model is not needed: the in-process generators are prompt tokenizers of
    their own model, and a bare Hugging Face tokenizer becomes one through
    :class:`~aligner_proxy.core.backends.tokenizer.HFTokenizer`.
    """

    @property
    def special_tokens(self) -> Sequence[str]:
        """Strings the tokenizer reads as control tokens (``<|im_end|>``...): broken up in untrusted text."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int, keep: Keep = "head") -> str:
        """Cut ``text`` to at most ``max_tokens`` tokens, keeping its head or tail."""
        ...


class PromptRenderer:
    """Renders Aligner prompts for one template and one tokenizer's special tokens.

    Build one per tokenizer (a :class:`~aligner_proxy.core.corrector.CorrectionPrompter`
    does) and reuse it: the neutralisation patterns are compiled once.
    """

    def __init__(self, template: AlignerTemplate | None = None, special_tokens: Iterable[str] | None = None) -> None:
        self.template = template or AlignerTemplate()
        self.neutralizer = Neutralizer(self.template, special_tokens)
        self.special_tokens = self.neutralizer.special_tokens
        labels = tuple(label if " " in label else f"{label}:" for label in self.template.role_labels)
        self.generation_stops: tuple[str, ...] = labels
        """The label stops worth passing to ``GenerationParams.stop`` (few: APIs cap their number)."""
        self.stop_markers: tuple[str, ...] = tuple(dict.fromkeys(labels + self.special_tokens))
        """Where a correction ends: the model started a new turn or wrote a special token."""

    def neutralize(self, text: str, *, conversation: bool = False) -> str:
        """:meth:`~aligner_proxy.core.neutralize.Neutralizer.neutralize` with this renderer's rules."""
        return self.neutralizer.neutralize(text, conversation=conversation)

    def _fit(
        self,
        text: str,
        budget: int | None,
        keep: Keep,
        count_tokens: CountTokens | None,
        truncate: Truncate | None,
        *,
        conversation: bool = False,
    ) -> str:
        """Cut neutralised ``text`` to ``budget`` tokens and re-neutralise the new edge."""
        if budget is None:
            return text.strip()
        if count_tokens is None or truncate is None:
            raise ValueError("a token budget needs both count_tokens and truncate")
        if budget <= 0:
            return ""
        if count_tokens(text) <= budget:
            return text.strip()
        target, cut = budget, ""
        for _ in range(4):  # a re-tokenised cut can count a token or two more than asked
            cut = self.neutralize(truncate(text, target, keep=keep), conversation=conversation).strip()
            excess = count_tokens(cut) - budget
            if excess <= 0:
                return cut
            target -= excess
            if target <= 0:
                break
        logger.warning("text still exceeds its budget of %d tokens after truncation", budget)
        return cut

    def fill(self, question: str, answer: str) -> str:
        """Put already-neutralised fields into the template and check the result."""
        question, answer = question.strip(), answer.strip()
        t = self.template
        first, second = (question, answer) if t.question_first else (answer, question)
        prompt = t.prefix + first + t.middle + second + t.suffix
        for marker in (*t.markers, *self.special_tokens):
            expected = t.prefix.count(marker) + t.middle.count(marker) + t.suffix.count(marker)
            if prompt.count(marker) != expected:
                raise PromptRenderError(f"rendered Aligner prompt has a stray {marker!r}")
        return prompt

    def render(
        self,
        question: str,
        answer: str,
        *,
        count_tokens: CountTokens | None = None,
        truncate: Truncate | None = None,
        max_question_tokens: int | None = None,
        max_answer_tokens: int | None = None,
    ) -> str:
        """The Aligner prompt for one (question, answer) pair, within the token budgets.

        The question keeps its tail and the answer its head (see the module
        docstring). A budget of ``None`` means no limit; any budget needs
        ``count_tokens`` and ``truncate`` (a generator's methods).
        """
        q = self._fit(self.neutralize(question), max_question_tokens, "tail", count_tokens, truncate)
        a = self._fit(self.neutralize(answer), max_answer_tokens, "head", count_tokens, truncate)
        return self.fill(q, a)

    def render_conversation(
        self,
        messages: Sequence[ChatMessage],
        *,
        count_tokens: CountTokens | None = None,
        truncate: Truncate | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """Render a chat history as the *question* text, within ``max_tokens``.

        The final user turn is always kept (its tail, if it alone is too
        long); then each system message if it fits whole; then the other turns
        newest first, stopping at the first that does not fit, so the kept
        history is contiguous. Turns read ``[role] content`` separated by a blank
        line. A lone user turn renders as its bare content, exactly like a
        single-turn question. The result is already neutralised.
        """
        if not messages:
            return ""
        roles = [_role_name(m.role) for m in messages]
        texts = [self.neutralize(m.content, conversation=True).strip() for m in messages]
        final = max((i for i, r in enumerate(roles) if r == "user"), default=len(messages) - 1)

        def line(i: int) -> str:
            return f"[{roles[i]}] {texts[i]}"

        def joined(kept: Iterable[int]) -> str:
            ordered = sorted(kept)
            if ordered == [final] and roles[final] == "user":
                return texts[final]
            return _TURN_SEPARATOR.join(line(i) for i in ordered)

        candidates = [i for i in range(len(messages)) if i != final and texts[i]]
        system = [i for i in candidates if roles[i] in ("system", "developer")]
        history = sorted((i for i in candidates if i not in system), reverse=True)
        if max_tokens is None:
            return joined([final, *candidates])
        if count_tokens is None or truncate is None:
            raise ValueError("a token budget needs both count_tokens and truncate")
        label_cost = count_tokens(f"[{roles[final]}] ")
        texts[final] = self._fit(
            texts[final], max_tokens - label_cost, "tail", count_tokens, truncate, conversation=True
        )
        separator_cost = count_tokens(_TURN_SEPARATOR)
        kept = [final]
        used = count_tokens(line(final))
        for group, stop_at_first_miss in ((system, False), (history, True)):
            for i in group:
                cost = count_tokens(line(i)) + separator_cost
                if used + cost <= max_tokens:
                    kept.append(i)
                    used += cost
                elif stop_at_first_miss:
                    break
        # Token counts of pieces need not add up exactly; drop the oldest until the whole fits.
        while count_tokens(question := joined(kept)) > max_tokens and len(kept) > 1:
            kept.remove(min(i for i in kept if i != final))
        return self._fit(question, max_tokens, "tail", count_tokens, truncate, conversation=True)

    def clean_correction(self, text: str) -> str:
        """Corrector output up to the first stop marker, stripped of surrounding whitespace."""
        cut = min((i for m in self.stop_markers if (i := text.find(m)) >= 0), default=len(text))
        return text[:cut].strip()

    def stream_cleaner(self) -> StreamCleaner:
        """A :class:`StreamCleaner` for one streamed correction."""
        return StreamCleaner(self.stop_markers)


def _role_name(role: str) -> str:
    name = role.strip().lower()
    return name if name in TURN_ROLES else "other"


class StreamCleaner:
    """Incremental :meth:`PromptRenderer.clean_correction` for a streamed correction.

    Feed text deltas in order; the concatenation of everything ``feed`` and
    ``finish`` return equals ``clean_correction`` of the whole text. A tail
    that could be the start of a stop marker, and trailing whitespace, are held
    back until the next delta shows what they are. ``done`` turns true once a
    stop marker was seen: the caller may stop generating.
    """

    def __init__(self, stop_markers: Sequence[str]) -> None:
        self._markers = tuple(m for m in stop_markers if m)
        self._pending = ""
        self._started = False
        self.done = False

    def feed(self, delta: str) -> str:
        if self.done:
            return ""
        pending = self._pending + delta
        if not self._started:
            pending = pending.lstrip()
            self._started = bool(pending)
        cut = min((i for m in self._markers if (i := pending.find(m)) >= 0), default=-1)
        if cut >= 0:
            self.done, self._pending = True, ""
            return pending[:cut].rstrip()
        held = self._held_length(pending)
        ready = pending[: len(pending) - held]
        out = ready.rstrip()
        self._pending = pending[len(out) :]
        return out

    def finish(self) -> str:
        """The rest of the text once the stream has ended."""
        out = "" if self.done else self._pending.rstrip()
        self._pending, self.done = "", True
        return out

    def _held_length(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop marker."""
        longest = max((len(m) for m in self._markers), default=1) - 1
        for k in range(min(longest, len(text)), 0, -1):
            tail = text[-k:]
            if any(m.startswith(tail) for m in self._markers):
                return k
        return 0


def render(
    question: str,
    answer: str,
    *,
    count_tokens: CountTokens | None = None,
    truncate: Truncate | None = None,
    max_question_tokens: int | None = None,
    max_answer_tokens: int | None = None,
    template: AlignerTemplate | None = None,
    special_tokens: Iterable[str] | None = None,
) -> str:
    """:meth:`PromptRenderer.render` with a renderer built for this call."""
    return PromptRenderer(template, special_tokens).render(
        question,
        answer,
        count_tokens=count_tokens,
        truncate=truncate,
        max_question_tokens=max_question_tokens,
        max_answer_tokens=max_answer_tokens,
    )


def render_conversation(
    messages: Sequence[ChatMessage],
    *,
    count_tokens: CountTokens | None = None,
    truncate: Truncate | None = None,
    max_tokens: int | None = None,
    template: AlignerTemplate | None = None,
    special_tokens: Iterable[str] | None = None,
) -> str:
    """:meth:`PromptRenderer.render_conversation` with a renderer built for this call."""
    return PromptRenderer(template, special_tokens).render_conversation(
        messages, count_tokens=count_tokens, truncate=truncate, max_tokens=max_tokens
    )


def clean_correction(
    text: str, *, template: AlignerTemplate | None = None, special_tokens: Iterable[str] | None = None
) -> str:
    """:meth:`PromptRenderer.clean_correction` with a renderer built for this call."""
    return PromptRenderer(template, special_tokens).clean_correction(text)
