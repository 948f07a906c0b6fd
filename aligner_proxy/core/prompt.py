"""The Aligner prompt: the one place it is formatted, neutralised and cleaned.

The Aligner corrector (Ji et al., "Aligner: Efficient Alignment by Learning to
Correct", NeurIPS 2024) was trained on a single fixed text format::

    BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to
    make it more helpful and harmless: {question} | {answer} ASSISTANT:

The proxy, the batch tools, the trainers and the evals all build that prompt
through :class:`PromptRenderer`, so there is exactly one formatter to get right.

Why neutralise? The question and the answer are untrusted text (the answer
comes from an upstream model a user can steer). Dropped verbatim into the
template, ``... | Sure! ASSISTANT: <fake correction>`` would let the input
write the corrector's output, and a tokenizer special token such as
``<|im_end|>`` would end the sequence for the model. Every field therefore
goes through :meth:`PromptRenderer.neutralize`, whose rules are:

1. **Text hygiene.** CR LF, lone CR, U+2028/U+2029, NEL, VT and FF become
   ``\\n``; NUL and every other C0/C1 control character except tab and newline
   are removed; lone surrogates become U+FFFD. The rendered fields are stripped
   of surrounding whitespace (the template provides the spacing).
2. **Role labels.** A template label (``BEGINNING OF CONVERSATION``, ``USER``,
   ``ASSISTANT`` for the default template: the upper-case words before a colon
   in the template) followed by a colon becomes ``«label»`` in lower case, e.g.
   ``ASSISTANT: Sure`` becomes ``«assistant» Sure``. Matching ignores case and
   runs on a *folded* copy of the text: NFKD compatibility folding (full-width
   ``ＡＳＳＩＳＴＡＮＴ：``, math letters, ``﹕``), combining marks and invisible
   format characters (zero-width space/joiner, BOM, soft hyphen...) dropped, a
   small table of Cyrillic/Greek look-alikes mapped to Latin, one optional
   separator between letters (``A S S I S T A N T:``, ``U.S.E.R:``) and
   markdown emphasis or spaces before the colon (``**User** :``). A colon-less
   multi-word label written in capitals (``BEGINNING OF CONVERSATION``) is
   lower-cased. A single word without a colon (``the USER table``) is left
   alone: it is ordinary prose and the model never saw it as a marker. A label
   is matched inside words too (``superuser:`` reads ``super«user»``): a
   zero-width character can hide a word boundary, and the structural check
   below counts plain substrings.
3. **Special tokens.** The tokenizer's special tokens (:class:`PromptTokenizer`)
   plus :data:`COMMON_SPECIAL_TOKENS` and anything shaped like ``<|name|>`` are
   broken with a visible space after their first character (``<|im_end|>``
   becomes ``< |im_end|>``) so no tokenizer can match them, while a reader
   still sees what was written.
4. **Separator.** The separator's core (``|``) standing where the template's
   separator stands, i.e. with whitespace or a field edge on both sides, becomes
   ``/``. ``a || b`` and ``x|y`` are untouched; a markdown table row
   ``| a | b |`` reads ``/ a / b /`` and a shell pipe ``ls | wc`` reads
   ``ls / wc``: the price of a separator that can be parsed back.
5. **Conversation turn labels** (only inside :meth:`render_conversation`):
   ``[user]``-style labels in message content become ``(user)`` so a message
   cannot fake a turn.

We do not attempt Unicode's full confusables table, spelled-out or translated
markers, or markers split by more than one character per gap: those read as
prose to the corrector too. Every render ends with a structural check (each
template marker and the separator occur exactly as often as in the template),
so a rule gap raises :class:`PromptRenderError` instead of sending a forged
prompt.

Length budget: the question keeps its *tail* (in a long question the actual
ask, and in a conversation the latest turn, comes last) and the answer keeps
its *head* (its opening decides whether it complies or refuses, and the
corrector writes its rewrite from the start within ``max_new_tokens`` anyway).
"""

from __future__ import annotations

import functools
import logging
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from aligner_proxy.core.generation import ChatMessage

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = (
    "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it "
    "more helpful and harmless: {question} | {answer} ASSISTANT:"
)

COMMON_SPECIAL_TOKENS: tuple[str, ...] = (
    # ChatML / Qwen / OpenAI
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    # Llama 3 / Phi / Zephyr
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|system|>", "<|user|>", "<|assistant|>",
    "<|end|>",
    # SentencePiece / Llama 2 / Mistral / Gemma
    "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<mask>", "[INST]", "[/INST]",
    "<<SYS>>", "<</SYS>>", "<start_of_turn>", "<end_of_turn>",
    # BERT-style
    "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]",
)  # fmt: skip

Keep = Literal["head", "tail"]

_SEPARATOR_GAP = r"[\s._*~`-]"  # what may stand between the letters of a spelled-out label
_COLONS = "[:\u2236\ua789\u02d0\u02f8\u0589\u05c3\u2e2c\ufe13\ufe55\uff1a]"
_CHAT_TOKEN = r"<\|[^<>|\s]{1,64}\|>"
_TURN_ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython", "other")
_TURN_SEPARATOR = "\n\n"
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85\x0b\x0c]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_LABEL_IN_TEMPLATE = re.compile(r"\b[A-Z]{2,}(?: [A-Z]{2,})*(?= *:)")
_HOMOGLYPHS = str.maketrans(
    "АВЕКМНОРСТУХЅІЈԚԜаеорсухѕіјԛԝһԁΑΒΕΖΗΙΚΜΝΟΡΤΥΧοιı",
    "ABEKMHOPCTYXSIJQWaeopcyxsijqwhdABEZHIKMNOPTYXoii",
)


class TemplateError(ValueError):
    """The Aligner template string is not usable (bad fields or no separator)."""


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


@dataclass(frozen=True)
class AlignerTemplate:
    """A validated Aligner template: literal text around one ``{question}`` and one ``{answer}``.

    ``labels`` are the role labels neutralised in user text and cut from
    corrections; by default the upper-case words followed by a colon in the
    template. ``{{``/``}}`` stand for literal braces, as in ``str.format``.
    """

    template: str = DEFAULT_TEMPLATE
    labels: tuple[str, ...] | None = None
    separator_replacement: str = "/"
    prefix: str = field(init=False)
    middle: str = field(init=False)
    suffix: str = field(init=False)
    question_first: bool = field(init=False)
    role_labels: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise TemplateError(f"invalid Aligner template {self.template!r}: {exc}") from exc
        pieces, fields = [""], []
        for literal, name, spec, conversion in parsed:
            pieces[-1] += literal
            if name is None:
                continue
            if name not in ("question", "answer") or spec or conversion:
                raise TemplateError(
                    f"invalid field {{{name}}} in Aligner template {self.template!r}: only plain "
                    "{question} and {answer} are allowed (write {{ and }} for literal braces)"
                )
            fields.append(name)
            pieces.append("")
        if sorted(fields) != ["answer", "question"]:
            raise TemplateError(f"an Aligner template needs exactly one {{question}} and one {{answer}}, got {fields}")
        prefix, middle, suffix = pieces
        if not middle.strip():
            raise TemplateError("the text between {question} and {answer} must contain a separator")
        replacement = self.separator_replacement
        if not replacement or middle.strip() in replacement:
            raise TemplateError(f"separator_replacement {replacement!r} must be non-empty and differ")
        static = prefix + "\n" + middle + "\n" + suffix
        labels = self.labels if self.labels is not None else _LABEL_IN_TEMPLATE.findall(static)
        for label in labels:
            if not re.fullmatch(r"[A-Za-z]+(?: [A-Za-z]+)*", label):
                raise TemplateError(f"role label {label!r} must be letters and single spaces")
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "middle", middle)
        object.__setattr__(self, "suffix", suffix)
        object.__setattr__(self, "question_first", fields[0] == "question")
        object.__setattr__(self, "role_labels", tuple(dict.fromkeys(labels)))

    @property
    def markers(self) -> tuple[str, ...]:
        """Strings that must occur in a rendered prompt exactly as often as in the template."""
        return (*(f"{label}:" for label in self.role_labels), self.middle)


def _sanitize(text: str) -> str:
    text = _NEWLINES.sub("\n", text)
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub("\ufffd", text)


def _fold(text: str) -> tuple[str, list[int] | None]:
    """Fold ``text`` for matching; return it with each folded char's index in ``text``.

    The index is ``None`` when folding is the identity (ASCII text, the common case).
    """
    if text.isascii():
        return text, None
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        folded = _fold_char(ch)
        chars.append(folded)
        index.extend([i] * len(folded))
    return "".join(chars), index


@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """NFKD, homoglyphs to Latin, combining marks and invisible characters dropped."""
    return "".join(
        c
        for c in unicodedata.normalize("NFKD", ch).translate(_HOMOGLYPHS)
        if unicodedata.category(c) not in ("Mn", "Me", "Cf") and c not in "\u115f\u1160\u3164\uffa0"
    )


def _usable_special(token: str) -> bool:
    return len(token) >= 2 and token == token.strip()


def _label_pattern(label: str) -> str:
    """A label spelled with at most one gap character between letters (``A S S I S T A N T``)."""
    words = [(_SEPARATOR_GAP + "?").join(map(re.escape, word)) for word in label.split()]
    return (_SEPARATOR_GAP + "+").join(words)


class PromptRenderer:
    """Renders Aligner prompts for one template and one tokenizer's special tokens.

    Build one per tokenizer (a :class:`~aligner_proxy.core.corrector.CorrectionPrompter`
    does) and reuse it: the neutralisation patterns are compiled once.
    """

    def __init__(self, template: AlignerTemplate | None = None, special_tokens: Iterable[str] | None = None) -> None:
        self.template = template or AlignerTemplate()
        tokens = (*COMMON_SPECIAL_TOKENS, *(special_tokens or ()))
        self.special_tokens: tuple[str, ...] = tuple(dict.fromkeys(filter(_usable_special, tokens)))
        labels = tuple(label if " " in label else f"{label}:" for label in self.template.role_labels)
        self.generation_stops: tuple[str, ...] = labels
        """The label stops worth passing to ``GenerationParams.stop`` (few: APIs cap their number)."""
        self.stop_markers: tuple[str, ...] = tuple(dict.fromkeys(labels + self.special_tokens))
        """Where a correction ends: the model started a new turn or wrote a special token."""
        self._pattern = self._compile(conversation=False)
        self._conversation_pattern = self._compile(conversation=True)

    def _compile(self, *, conversation: bool) -> re.Pattern[str]:
        folded = sorted({_fold(t)[0] for t in self.special_tokens}, key=len, reverse=True)
        alternatives = [f"(?P<S>{'|'.join([*map(re.escape, folded), _CHAT_TOKEN])})"]
        for k, label in enumerate(self.template.role_labels):
            body = _label_pattern(label)
            alternatives.append(f"(?P<L{k}>(?i:{body})[\\s*_~`]*{_COLONS})")
            if " " in label:
                words = r"\s+".join(map(re.escape, label.split()))
                alternatives.append(f"(?P<B{k}>{words})")
        middle = self.template.middle
        core = r"\s+".join(map(re.escape, middle.split()))
        before = r"(?<!\S)" if middle[0].isspace() else ""
        after = r"(?!\S)" if middle[-1].isspace() else ""
        alternatives.append(f"(?P<SEP>{before}{core}{after})")
        if conversation:
            alternatives.append(rf"(?P<T>\[\s*(?i:{'|'.join(_TURN_ROLES)})\s*\])")
        return re.compile("|".join(alternatives))

    def _replace(self, match: re.Match[str], original: str) -> str:
        group = match.lastgroup or ""
        if group == "S":
            return original[0] + " " + original[1:]
        if group == "SEP":
            return self.template.separator_replacement
        if group == "T":
            return "(" + re.sub(r"[\[\]\s]", "", match.group()).lower() + ")"
        label = self.template.role_labels[int(group[1:])].lower()
        return f"«{label}»" if group[0] == "L" else label

    def neutralize(self, text: str, *, conversation: bool = False) -> str:
        """Make ``text`` safe to place in a template field (rules in the module docstring).

        Idempotent: neutralising neutralised text changes nothing.
        """
        text = _sanitize(text)
        folded, index = _fold(text)
        pattern = self._conversation_pattern if conversation else self._pattern
        out: list[str] = []
        last = 0
        for match in pattern.finditer(folded):
            start, end = match.span()
            if index is not None:
                start, end = index[start], index[end - 1] + 1
            if start < last:  # overlaps the previous match through a multi-char fold
                continue
            out.append(text[last:start])
            out.append(self._replace(match, text[start:end]))
            last = end
        out.append(text[last:])
        return "".join(out)

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
    return name if name in _TURN_ROLES else "other"


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
