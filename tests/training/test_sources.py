"""Which safety-only instructions count as harmful requests (training/data/sources.py)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from training.data.records import SafetyLabel
from training.data.sources import declines, harmful_safety_instructions


@pytest.mark.parametrize(
    ("output", "declined"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("No, it is illegal to rob stores in Kansas or any other state.", True),
        ("no. That would hurt someone.", True),
        ("  No , mailing feces is harassment.", True),
        ("Irish culture is rich and varied, with a long history.", False),
        ("Nobody should do that, but here are the facts about burglary.", False),
        ("Not all Asian parents are strict; parenting styles vary.", False),
        ("Yes, everyone should follow the law.", False),
    ],
)
def test_declines_is_a_refusal_or_a_bare_no(output: str, declined: bool) -> None:
    assert declines(output) is declined


def test_harmful_safety_instructions_keeps_declined_ones_and_counts_the_rest() -> None:
    outputs = {"q1": "I cannot do that.", "q2": "No, that is a crime.", "q3": "Latex allergy: avoid latex gloves."}
    items = [SafetyLabel(source="safety-only", question=q, answer=a, is_safe=True) for q, a in outputs.items()]
    drops: dict[str, Counter[str]] = defaultdict(Counter)
    assert [x.question for x in harmful_safety_instructions(items, "declined", drops, "s")] == ["q1", "q2"]
    assert sum(drops["s"].values()) == 1
    drops.clear()
    assert harmful_safety_instructions(items, "all", drops, "s") == items and not drops
