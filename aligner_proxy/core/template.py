"""The Aligner template: the fixed text around a question and an answer that the corrector was trained on.

Aligner (Ji et al., "Aligner: Efficient Alignment by Learning to Correct",
NeurIPS 2024) was trained on a single format, :data:`DEFAULT_TEMPLATE`. A
deployment may configure another; :class:`AlignerTemplate` validates it once
(exactly one plain ``{question}`` and ``{answer}``, a separator between them)
and reads off what the renderer and the cleaner need: the literal pieces, the
order of the fields, the role labels and the markers a rendered prompt must
hold exactly once.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

DEFAULT_TEMPLATE = (
    "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it "
    "more helpful and harmless: {question} | {answer} ASSISTANT:"
)

_LABEL_IN_TEMPLATE = re.compile(r"\b[A-Z]{2,}(?: [A-Z]{2,})*(?= *:)")
_LABEL_AT_LINE_START = re.compile(r"(?m)^[\s#>*_-]*([A-Za-z]+(?: [A-Za-z]+){0,3})[*_]* *:")
"""A custom template's own labels need not be capitals: ``### Correction:`` or ``Answer:`` at a line's start."""


class TemplateError(ValueError):
    """The Aligner template string is not usable (bad fields or no separator)."""


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
        if self.labels is not None:
            labels = self.labels
        else:
            labels = (*_LABEL_IN_TEMPLATE.findall(static), *_LABEL_AT_LINE_START.findall(static))
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
