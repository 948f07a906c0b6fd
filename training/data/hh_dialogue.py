"""The Anthropic HH-RLHF dialogue format: ``\\n\\nHuman: ...\\n\\nAssistant: ...`` parsed into turns and back.

HH-RLHF (Bai et al. 2022) stores each side of a preference pair as one whole
dialogue; the two sides share every turn but the last assistant answer.
:func:`split_hh_pair` recovers that shared context and the two answers, and
:func:`render_dialogue` writes a context back as a question for the corrector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from training.data.rows import BadRow


@dataclass(frozen=True)
class Turn:
    """One turn of an HH-RLHF dialogue."""

    role: str  # "Human" or "Assistant"
    text: str


_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def parse_hh_dialogue(text: str) -> list[Turn]:
    """Split ``\\n\\nHuman: ... \\n\\nAssistant: ...`` into turns (text stripped).

    A leading ``\\n\\n`` is optional, so a dialogue rendered by
    :func:`render_dialogue` parses back. Text before the first marker is
    ignored; the format offers no escape, so a turn that itself contains
    ``\\n\\nHuman:`` splits there, as it does for every HH-RLHF consumer."""
    parts = _HH_MARKER.split(text)
    return [Turn(role=parts[i], text=parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def render_dialogue(turns: list[Turn]) -> str:
    """``Human: ...\\n\\nAssistant: ...`` (no leading blank line, no trailing assistant cue)."""
    return "\n\n".join(f"{t.role}: {t.text}" for t in turns)


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[Turn], str, str]:
    """The shared context turns and the two final assistant answers of an HH-RLHF pair.

    Raises :class:`BadRow` when the dialogues do not end with an assistant turn
    or differ before it."""
    chosen_turns, rejected_turns = parse_hh_dialogue(chosen), parse_hh_dialogue(rejected)
    if not chosen_turns or not rejected_turns:
        raise BadRow("no Human/Assistant turns")
    if chosen_turns[-1].role != "Assistant" or rejected_turns[-1].role != "Assistant":
        raise BadRow("dialogue does not end with an assistant turn")
    context = chosen_turns[:-1]
    if context != rejected_turns[:-1]:
        raise BadRow("chosen and rejected differ before the last turn")
    if not context or context[-1].role != "Human":
        raise BadRow("no human turn before the last assistant turn")
    if not chosen_turns[-1].text or not rejected_turns[-1].text:
        raise BadRow("empty last assistant turn")
    return context, chosen_turns[-1].text, rejected_turns[-1].text
