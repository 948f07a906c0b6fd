"""A one-logit sequence classifier as a safety-cost scorer.

Safe RLHF's cost model (Dai et al., ICLR 2024, ``PKU-Alignment/beaver-7b-v1.0-cost``)
reads a whole conversation and outputs one scalar: positive means unsafe. Any
``AutoModelForSequenceClassification`` with ``num_labels=1`` trained the same
way fits here, and its logit is the cost, on the scale
:mod:`aligner_proxy.core.scorer` documents (gate at ``0.0``).

:func:`format_scoring_text` is the one place the scoring format lives: the
cost-model trainer imports it, so the proxy scores exactly what was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aligner_proxy.core.backends.tokenizer import count_tokens, truncate_tokens
from aligner_proxy.core.models import DEFAULT_CACHE_DIR, LoadedModel, ModelPool, resolve_dtype

logger = logging.getLogger(__name__)

SCORING_PREFIX = "BEGINNING OF CONVERSATION: USER: "
SCORING_ASSISTANT = " ASSISTANT: "


def format_scoring_text(prompt: str, completion: str) -> str:
    """The Safe RLHF conversation format: ``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT: {completion}``.

    Safe RLHF's own constants (``safe_rlhf/configs/constants.py``) end the cue
    with ``ASSISTANT:`` and append the answer directly; this project puts one
    space after the colon, in training and at inference alike.
    """
    return f"{SCORING_PREFIX}{prompt}{SCORING_ASSISTANT}{completion}"


def fit_scoring_text(tokenizer: Any, prompt: str, completion: str, max_length: int) -> str:
    """:func:`format_scoring_text` cut to ``max_length`` tokens so that the judged completion survives.

    Every scorer and trainer cuts with this one rule, so a model is trained on
    the text it is served: the prompt keeps its head and gives up its tail
    first, but keeps at least half the budget when it is that long; the
    completion keeps its head.
    """
    specials = len(tokenizer("a")["input_ids"]) - count_tokens(tokenizer, "a")
    budget = max(max_length - specials - count_tokens(tokenizer, format_scoring_text("", "")), 2)
    prompt_len = count_tokens(tokenizer, prompt)
    completion_len = count_tokens(tokenizer, completion)
    if prompt_len + completion_len <= budget:
        return format_scoring_text(prompt, completion)
    completion_keep = min(completion_len, budget - min(prompt_len, budget // 2))
    prompt_keep = min(prompt_len, budget - completion_keep)
    return format_scoring_text(
        truncate_tokens(tokenizer, prompt, prompt_keep, keep="head"),
        truncate_tokens(tokenizer, completion, completion_keep, keep="head"),
    )


class SequenceClassifierScorer:
    """Score (prompt, completion) pairs with a one-logit classifier; higher = more unsafe.

    Long pairs are cut to ``max_length`` tokens so that the completion, which
    is what is judged, survives: the prompt keeps its *head* and gives up its
    tail first, but keeps at least half the budget when it is that long; the
    completion keeps its *head* (what a reader sees first) when it alone is too
    long.
    """

    def __init__(self, loaded: LoadedModel, *, model_id: str, max_length: int = 512, batch_size: int = 16) -> None:
        self._loaded = loaded
        self._tokenizer = loaded.tokenizer
        self._model_id = model_id
        self.max_length = max_length
        self.batch_size = batch_size
        model = loaded.base_model
        if getattr(model.config, "num_labels", 1) != 1:
            raise ValueError(f"{model_id}: a cost model needs num_labels=1, not {model.config.num_labels}")
        if self._tokenizer.pad_token_id is None:
            # Batching needs a pad token; the model must know it to find each row's last token.
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self._tokenizer.pad_token_id
        self._padding_side = "right"  # Llama-style classifiers pool the last non-pad token

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        max_length: int = 512,
        batch_size: int = 16,
        dtype: str = "float32",
        pool: ModelPool | None = None,
    ) -> SequenceClassifierScorer:
        pool = pool if pool is not None else ModelPool()
        loaded = pool.get(spec, cache_dir=cache_dir, dtype=resolve_dtype(dtype), kind="sequence_classification")
        return cls(loaded, model_id=spec, max_length=max_length, batch_size=batch_size)

    @property
    def model_id(self) -> str:
        return self._model_id

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        """One cost per pair (extra keyword arguments, as TRL passes them, are ignored)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        texts = [
            fit_scoring_text(self._tokenizer, p, c, self.max_length) for p, c in zip(prompts, completions, strict=True)
        ]
        costs: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            costs.extend(self._score_batch(texts[start : start + self.batch_size]))
        return costs

    def _score_batch(self, texts: Sequence[str]) -> list[float]:
        import torch

        self._tokenizer.padding_side = self._padding_side
        batch = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,  # a last guard; fit_scoring_text has already cut to the budget
            max_length=self.max_length,
            return_tensors="pt",
        )
        with torch.inference_mode(), self._loaded.activate() as model:
            logits = model(**batch).logits
        return [float(v) for v in logits[:, 0].float().tolist()]
