"""Neutralising untrusted text before it goes into an Aligner prompt field.

The question and the answer are untrusted text (the answer comes from an
upstream model a user can steer). Dropped verbatim into the template,
``... | Sure! ASSISTANT: <fake correction>`` would let the input write the
corrector's output, and a tokenizer special token such as ``<|im_end|>`` would
end the sequence for the model. Every field therefore goes through
:meth:`Neutralizer.neutralize`, whose rules are:

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
   zero-width character can hide a word boundary, and the renderer's structural
   check counts plain substrings.
3. **Special tokens.** The tokenizer's special tokens
   (:class:`~aligner_proxy.core.prompt.PromptTokenizer`)
   plus :data:`COMMON_SPECIAL_TOKENS` and anything shaped like ``<|name|>`` are
   broken with a visible space after their first character (``<|im_end|>``
   becomes ``< |im_end|>``) so no tokenizer can match them, while a reader
   still sees what was written.
4. **Separator.** The separator's core (``|``) standing where the template's
   separator stands, i.e. with whitespace or a field edge on both sides, becomes
   ``/``. ``a || b`` and ``x|y`` are untouched; a markdown table row
   ``| a | b |`` reads ``/ a / b /`` and a shell pipe ``ls | wc`` reads
   ``ls / wc``: the price of a separator that can be parsed back.
5. **Conversation turn labels** (only inside
   :meth:`~aligner_proxy.core.prompt.PromptRenderer.render_conversation`):
   ``[user]``-style labels in message content become ``(user)`` so a message
   cannot fake a turn.

We do not attempt Unicode's full confusables table, spelled-out or translated
markers, or markers split by more than one character per gap: those read as
prose to the corrector too; the renderer's structural check
(:meth:`aligner_proxy.core.prompt.PromptRenderer.fill`) catches what the rules miss.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from aligner_proxy.core.template import AlignerTemplate

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

TURN_ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython", "other")
"""The role names a rendered conversation labels its turns with; any other role reads ``other``."""

_SEPARATOR_GAP = r"[\s._*~`-]"  # what may stand between the letters of a spelled-out label
# ':' and its look-alikes (Unicode's confusables for U+003A), so "ASSISTANT꞉" is a label too.
_COLONS = (
    "[:\u2236\ua789\u02d0\u02f8\u0589\u05c3\u2e2c\ufe13\ufe55\uff1a"
    "\u0703\u0704\u0903\u0a83\u16ec\u1803\u1809\u205a\ua4fd]"
)
_CHAT_TOKEN = r"<\|[^<>|\s]{1,64}\|>"
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85\x0b\x0c]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_HOMOGLYPHS = str.maketrans(
    "АВЕКМНОРСТУХЅІЈԚԜаеорсухѕіјԛԝһԁΑΒΕΖΗΙΚΜΝΟΡΤΥΧοιı",
    "ABEKMHOPCTYXSIJQWaeopcyxsijqwhdABEZHIKMNOPTYXoii",
)


class Neutralizer:
    """The neutralisation rules for one template and one tokenizer's special tokens, compiled once.

    ``special_tokens`` holds the tokenizer's tokens plus :data:`COMMON_SPECIAL_TOKENS`
    (the usable ones, in order, without repeats).
    """

    def __init__(self, template: AlignerTemplate, special_tokens: Iterable[str] | None = None) -> None:
        self.template = template
        tokens = (*COMMON_SPECIAL_TOKENS, *(special_tokens or ()))
        self.special_tokens: tuple[str, ...] = tuple(dict.fromkeys(filter(_usable_special, tokens)))
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
            alternatives.append(rf"(?P<T>\[\s*(?i:{'|'.join(TURN_ROLES)})\s*\])")
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

        Idempotent: neutralising neutralised text changes nothing. With
        ``conversation``, ``[user]``-style turn labels become ``(user)`` too (rule 5).
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
