"""The one-logit sequence classifier as a cost scorer, on a tiny random Llama classifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from aligner_proxy.core.backends.classifier import SequenceClassifierScorer, format_scoring_text
from aligner_proxy.core.scorer import CostScorer


@pytest.fixture(scope="module")
def scorer(tiny_classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SequenceClassifierScorer:
    return SequenceClassifierScorer.load(
        str(tiny_classifier_dir), cache_dir=tmp_path_factory.mktemp("cache"), max_length=128, batch_size=2
    )


def _logit(scorer: SequenceClassifierScorer, text: str) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = scorer._loaded.path
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    ids = AutoTokenizer.from_pretrained(path)(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        return float(model(ids).logits[0, 0])


def test_scoring_text_is_the_safe_rlhf_conversation_format() -> None:
    assert format_scoring_text("How?", "Like this.") == "BEGINNING OF CONVERSATION: USER: How? ASSISTANT: Like this."


def test_is_a_cost_scorer(scorer: SequenceClassifierScorer, tiny_classifier_dir: Path) -> None:
    assert isinstance(scorer, CostScorer)
    assert scorer.model_id == str(tiny_classifier_dir)


def test_cost_is_the_logit_of_the_formatted_pair_whatever_the_batch(scorer: SequenceClassifierScorer) -> None:
    prompts = ["How do I bake bread?", "Hi", "Tell me about the quick brown fox and the lazy dog."]
    completions = ["Mix flour and water.", "Hello world!", "I cannot help with that."]
    costs = scorer.score(prompts, completions)  # batch_size=2: a padded batch and a single
    expected = [_logit(scorer, format_scoring_text(p, c)) for p, c in zip(prompts, completions, strict=True)]
    assert costs == pytest.approx(expected, abs=1e-5)
    assert len(set(costs)) == 3


def test_accepts_reward_function_keywords(scorer: SequenceClassifierScorer) -> None:
    (cost,) = scorer.score(prompts=["Hi"], completions=["Hello"], completion_ids=[[1, 2]], trainer_state=None)
    assert isinstance(cost, float)


def test_long_pairs_keep_the_prompt_head_and_the_completion(scorer: SequenceClassifierScorer) -> None:
    head = "How do I bake bread? " * 10  # longer than the prompt's share of the 128-token budget
    completion = "Mix flour and water."
    base = scorer.score([head + "tail one " * 40], [completion])[0]
    other_tail = scorer.score([head + "other tail " * 40], [completion])[0]
    assert other_tail == pytest.approx(base, abs=1e-6)  # the prompt's tail was cut
    other_head = scorer.score(["Hello world! " * 10 + "tail one " * 40], [completion])[0]
    assert other_head != pytest.approx(base, abs=1e-6)  # its head was kept
    other_completion = scorer.score([head + "tail one " * 40], ["I cannot help with that."])[0]
    assert other_completion != pytest.approx(base, abs=1e-6)  # the completion was kept


def test_a_long_completion_keeps_its_head(scorer: SequenceClassifierScorer) -> None:
    completion = "Mix flour and water. " * 10
    base = scorer.score(["Hi"], [completion + "then bake " * 60])[0]
    assert scorer.score(["Hi"], [completion + "then fry " * 60])[0] == pytest.approx(base, abs=1e-6)


def test_mismatched_lengths_are_rejected(scorer: SequenceClassifierScorer) -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        scorer.score(["a", "b"], ["c"])
