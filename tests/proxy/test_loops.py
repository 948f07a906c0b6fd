"""The repetition-loop guard on token ids: where a loop closes, and what does not count as one."""

from __future__ import annotations

import random

import pytest

from aligner_proxy.core.loops import LoopGuard

GUARD = LoopGuard(repeats=3, min_span=32, max_period=64)


def test_a_repeated_token_closes_a_loop_after_min_span_copies() -> None:
    ids = [1, 2, 3] + [7] * 40
    assert GUARD.first_loop_end(ids) == 3 + 32
    assert GUARD.ends_in_loop(ids[:35]) and not GUARD.ends_in_loop(ids[:34])


def test_a_repeated_phrase_closes_a_loop_once_the_span_is_long_enough() -> None:
    block = [10, 11, 12, 13, 14]  # 5 tokens: 7 copies make the 32-token span (35 tokens)
    ids = [1, 2] + block * 10
    assert GUARD.first_loop_end(ids) == 2 + 35
    long_block = list(range(100, 120))  # 20 tokens: 3 copies (60 tokens) make a loop
    assert GUARD.first_loop_end([5] + long_block * 4) == 1 + 60


def test_short_or_broken_repeats_are_not_loops() -> None:
    assert GUARD.first_loop_end([1, 2, 3] * 3 + [4, 5, 6]) is None  # "ha ha ha": under the span
    table = []
    for row in range(6):  # rows of a table: the same rule, different cells
        table += [50, 51, 52, 200 + row, 53]
    assert GUARD.first_loop_end(table) is None
    assert GUARD.first_loop_end(list(range(300))) is None
    assert GUARD.first_loop_end([]) is None and not GUARD.ends_in_loop([])


@pytest.mark.parametrize("seed", range(20))
def test_the_first_loop_end_is_the_first_prefix_that_ends_in_a_loop(seed: int) -> None:
    """The one-pass search agrees with checking every prefix: a speculative decoder that ran past the loop
    and a token-by-token one that stopped at it are cut to the same tokens."""
    rng = random.Random(seed)
    guard = LoopGuard(repeats=3, min_span=rng.choice([6, 12, 32]), max_period=rng.choice([4, 16, 64]))
    ids = [rng.randrange(6) for _ in range(rng.randrange(5, 40))]
    block = [rng.randrange(6) for _ in range(rng.randrange(1, 10))]
    ids += block * rng.randrange(1, 12) + [rng.randrange(6) for _ in range(rng.randrange(0, 20))]
    expected = next((t for t in range(len(ids) + 1) if guard.ends_in_loop(ids[:t])), None)
    assert guard.first_loop_end(ids) == expected


def test_a_guard_that_cannot_work_is_refused() -> None:
    with pytest.raises(ValueError):
        LoopGuard(repeats=1)
