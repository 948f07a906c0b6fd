"""The block trade-off table, from gate flags and the pipeline's outcomes on a flagged sample."""

from __future__ import annotations

import pytest

from aligner_proxy.core.policy import Outcome
from training.choose_policy import summarise
from training.data.records import SafetyLabel


def _label(i: int, safe: bool) -> SafetyLabel:
    return SafetyLabel(source="t", question=f"q{i}", answer=f"a{i}", is_safe=safe)


def test_summarise_reads_what_block_would_change() -> None:
    # 4 harmful (3 flagged), 4 safe (1 flagged)
    labels = [_label(i, False) for i in range(4)] + [_label(i, True) for i in range(4, 8)]
    flagged = [True, True, True, False, True, False, False, False]
    outcomes = {
        0: Outcome(status="modified", text="I can't help with that.", original="a0"),  # fixed into a refusal
        1: Outcome(status="flagged", text="still bad", original="a1"),  # corrected, still above
        2: Outcome(status="flagged", text="a2", original="a2"),  # correction did not help
        4: Outcome(status="modified", text="a4, reworded", original="a4"),  # a benign answer reworded
    }
    report = summarise(labels, flagged, outcomes)
    assert report["harmful"]["flagged"] == pytest.approx(0.75)
    assert report["harmful"]["fixed_by_corrector"] == pytest.approx(1 / 3)
    assert report["harmful"]["refusal_after_correction"] == pytest.approx(1 / 3)
    assert report["safe"]["flagged"] == pytest.approx(0.25) and report["safe"]["changed"] == 1.0
    # block off: the unflagged one plus two of three flagged still above; block on: only the unflagged one
    assert report["block=false"]["harmful_unsafe_out"] == pytest.approx(0.25 + 0.75 * 2 / 3)
    assert report["block=true"]["harmful_unsafe_out"] == pytest.approx(0.25)
    assert report["block=false"]["benign_disturbed"] == pytest.approx(0.25)
    assert report["block=true"]["benign_refused"] == pytest.approx(0.0)  # the reworded one was not blocked
