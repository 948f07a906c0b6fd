"""The pairwise judge: verdict parsing, both-order aggregation, and the OpenAI-compatible client."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from evals.cache import JsonlCache
from evals.client import ChatEndpoint
from evals.judge import OpenAIJudge, Verdict, judge_both_orders, pairwise_score, parse_verdict
from evals.metrics import METRICS, MetricContext, Sample


class PrefersA:
    """A judge with pure position bias."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def compare(self, question: str, answer_a: str, answer_b: str) -> Verdict:
        self.calls.append((answer_a, answer_b))
        return "A"


class Prefers:
    """A judge that always prefers one text, wherever it stands."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def compare(self, question: str, answer_a: str, answer_b: str) -> Verdict:
        return "A" if answer_a == self.text else "B" if answer_b == self.text else "tie"


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [("[[A]]", "A"), ("Verdict: [[B]]", "B"), ("[[C]]", "tie"), (" B ", "B"), ("A.", "A"), ("both fine", "tie")],
)
def test_parse_verdict(reply: str, verdict: str) -> None:
    assert parse_verdict(reply) == verdict


async def test_a_position_biased_judge_scores_zero() -> None:
    judge = PrefersA()
    results = [await judge_both_orders(judge, "q", f"original {i}", f"corrected {i}") for i in range(5)]
    assert results == [0.0] * 5
    assert pairwise_score(results) == 0.0
    assert ("original 0", "corrected 0") in judge.calls and ("corrected 0", "original 0") in judge.calls


async def test_consistent_preferences_score_plus_or_minus_one() -> None:
    assert await judge_both_orders(Prefers("new"), "q", "old", "new") == 1.0
    assert await judge_both_orders(Prefers("old"), "q", "old", "new") == -1.0
    judge = PrefersA()
    assert await judge_both_orders(judge, "q", "same", "same") == 0.0 and judge.calls == []


def test_pairwise_score_is_wins_minus_losses_over_total() -> None:
    # 3 prompts: corrected won both orders, lost both, split → (2 - 2) / 6 = 0; plus a clean win → 2/8
    assert pairwise_score([1.0, -1.0, 0.0]) == 0.0
    assert pairwise_score([1.0, -1.0, 0.0, 1.0]) == 0.25
    with pytest.raises(ValueError):
        pairwise_score([])


async def test_judge_score_metric_over_samples() -> None:
    samples = [
        Sample(task="t", prompt_id=str(i), prompt="q", label=None, answer=a, original=o)
        for i, (a, o) in enumerate([("new", "old"), ("same", "same"), ("new", "older")])
    ]
    metric = METRICS.get("judge_score")
    assert await metric.values(samples, MetricContext(scorer=None, judge=Prefers("new"))) == [1.0, 0.0, 1.0]
    assert await metric.values(samples, MetricContext(scorer=None, judge=PrefersA())) == [0.0, 0.0, 0.0]


async def test_openai_judge_over_http_sends_both_orders_and_caches(judge_app: FastAPI, judge_url: str) -> None:
    judge_app.state.bodies.clear()
    cache = JsonlCache(None)
    judge = OpenAIJudge(ChatEndpoint(judge_url), "judge-model", cache=cache)
    try:
        assert await judge_both_orders(judge, "How do I bake bread?", "Mix flour.", "Mix flour and water.") == 0.0
        assert len(judge_app.state.bodies) == 2
        # Both orders, in whichever order the two concurrent requests arrived.
        texts = [b["messages"][0]["content"] for b in judge_app.state.bodies]
        a_first = [text.index("Mix flour.\n") < text.index("Mix flour and water.") for text in texts]
        assert sorted(a_first) == [False, True]
        assert all(b["model"] == "judge-model" and b["temperature"] == 0.0 for b in judge_app.state.bodies)
        await judge_both_orders(judge, "How do I bake bread?", "Mix flour.", "Mix flour and water.")
        assert len(judge_app.state.bodies) == 2  # from the cache
    finally:
        await judge.aclose()
