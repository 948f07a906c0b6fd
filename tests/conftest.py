"""Shared fixtures: tiny random models with a real tokenizer, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import save_tiny_classifier, save_tiny_lm


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny random LlamaForCausalLM, its BPE tokenizer and a chat template."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny random one-logit LlamaForSequenceClassification and the same tokenizer."""
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"))
