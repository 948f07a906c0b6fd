"""Repetition loops in greedy output: found on token ids, so a generation can stop where one closes.

A small model decoding greedily often falls into a loop: the same phrase, or
the same token, over and over until the token cap. For a corrector that is
wasted decode time and a worse answer. The usual remedies change what the model
writes everywhere (``repetition_penalty`` and ``no_repeat_ngram_size`` both
count the prompt, so they penalise exactly the copying a correction is made
of); this guard changes nothing until a loop has closed, and then ends the
generation there.

A token sequence *ends in a loop* when its last ``k × p`` tokens are ``k``
copies of one block of ``p`` tokens (``p ≤ max_period``), with ``k`` at least
``repeats`` and the span at least ``min_span`` tokens, so that short legitimate
repeats (a table rule, "ha ha ha", a list of short items) do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LoopGuard:
    """What counts as a loop; see the module docstring."""

    repeats: int = 3
    min_span: int = 32
    max_period: int = 64

    def __post_init__(self) -> None:
        if self.repeats < 2 or self.min_span < 2 or self.max_period < 1:
            raise ValueError(f"invalid loop guard: {self}")

    def copies(self, period: int) -> int:
        """How many copies of a ``period``-token block make a loop."""
        return max(self.repeats, -(-self.min_span // period))

    def ends_in_loop(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` ends in a loop (cost: one slice comparison per period, in C)."""
        n = len(ids)
        for period in range(1, self.max_period + 1):
            span = period * self.copies(period)
            if span > n:
                continue
            tail = list(ids[n - span :])
            if tail[period:] == tail[:-period]:  # the span is periodic with this period
                return True
        return False

    def first_loop_end(self, ids: Sequence[int]) -> int | None:
        """The length of the shortest prefix of ``ids`` that ends in a loop, or ``None``.

        One pass: ``run[p]`` counts the positions in a row where a token equals
        the one ``p`` before it; a prefix of length ``t`` ends in a loop of
        period ``p`` when that run covers all but the first block of the span.
        A generation cut here is the one that stopping at the first loop gives,
        however many tokens past it a speculative decoder went.
        """
        runs = [0] * (self.max_period + 1)
        needed = [0] + [(self.copies(p) - 1) * p for p in range(1, self.max_period + 1)]
        for i, token in enumerate(ids):
            for period in range(1, min(i, self.max_period) + 1):
                if ids[i - period] == token:
                    runs[period] += 1
                    if runs[period] >= needed[period]:
                        return i + 1
                else:
                    runs[period] = 0
        return None


DEFAULT_LOOP_GUARD = LoopGuard()
