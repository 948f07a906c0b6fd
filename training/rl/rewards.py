"""The project's scorers as RL reward functions: TRL's signature, reward − λ·cost, caching.

Every scorer already has TRL's reward-function signature,
``score(prompts, completions, **kw) -> list[float]`` (:mod:`aligner_proxy.core.scorer`),
but a TRL trainer calls a *callable* and maximises what it returns, and may
pass conversational prompts and completions (lists of ``{"role", "content"}``
messages) plus keyword arguments (``completion_ids``, ``trainer_state``,
``log_metric``, dataset columns). The adapters here bridge that:

- :class:`ScorerReward`: one scorer as a reward function; a cost is negated
  (optionally squashed by a sigmoid first, so it reads as a probability of
  "unsafe" on the scorer's logit scale).
- :class:`CombinedReward`: ``(r - λ·c) / (1 + λ)``, the Safe RLHF trade-off as a
  single reward for TRL's ``GRPOTrainer`` (Dai et al., ICLR 2024, eq. 11 applied
  to rewards instead of advantages). With a
  :class:`~training.rl.lagrangian.LagrangeMultiplier`, λ takes one ascent step
  on each call from that batch's mean cost, so a GRPO run becomes a
  primal-dual method with one dual step per generation batch.
- :class:`CachedScorer`: deduplicates and batches scorer calls and keeps an LRU
  cache, because RL re-scores the same (prompt, completion) pairs (GRPO groups
  repeat a prompt; evaluation re-reads the same answers).
- :func:`build_scorer`: a small registry from a spec string (``keyword``,
  ``classifier:PATH``, ``blocker:PATH`` ...) to a scorer, for configs.

:class:`NonRefusalReward` is the stand-in *helpfulness* reward of the demo: 1
for a non-empty answer that is not a refusal, else 0 (judged by
:func:`aligner_proxy.core.refusal.is_refusal`). It is crude on purpose, a signal
that pulls against the cost on harmful prompts, not a measure of quality; pass
a trained reward model (``classifier:runs/reward_model`` with ``transform:
negate``) for real runs.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from training.rl.lagrangian import LagrangeMultiplier

logger = logging.getLogger(__name__)

Transform = Literal["identity", "sigmoid", "negate"]


class Scorer(Protocol):
    """The one scoring signature (a :class:`~aligner_proxy.core.scorer.CostScorer`, or a reward with the same shape)."""

    @property
    def model_id(self) -> str: ...

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]: ...


# --------------------------------------------------------------------------- TRL's inputs


def as_text(value: Any, *, role: str | None = None) -> str:
    """Plain text from a TRL prompt or completion: a string, or a list of chat messages.

    For a conversation the last message of ``role`` (any role when ``None``) is
    used: the scorers judge the last user turn and the assistant's answer.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("content", ""))
    if isinstance(value, Sequence):
        messages = [m for m in value if isinstance(m, Mapping) and (role is None or m.get("role") == role)]
        return str(messages[-1].get("content", "")) if messages else ""
    raise TypeError(f"cannot read text from {type(value).__name__}")


def apply_transform(values: Sequence[float], transform: Transform) -> list[float]:
    if transform == "identity":
        return [float(v) for v in values]
    if transform == "negate":
        return [-float(v) for v in values]
    if transform == "sigmoid":
        return [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, float(v))))) for v in values]
    raise ValueError(f"unknown transform {transform!r}; known: identity, sigmoid, negate")


# --------------------------------------------------------------------------- adapters


class CachedScorer:
    """A scorer with deduplicated, batched calls and an LRU cache of ``(prompt, completion) -> score``.

    Scores must be deterministic for the cache to be right (every project
    scorer is, in eval mode).
    """

    def __init__(self, scorer: Scorer, *, batch_size: int = 32, max_entries: int = 100_000) -> None:
        self.scorer = scorer
        self.batch_size = batch_size
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def model_id(self) -> str:
        return self.scorer.model_id

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        keys = list(zip(prompts, completions, strict=True))
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        self.hits += len(keys) - len(missing)  # lookups served without calling the scorer
        self.misses += len(missing)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            scores = self.scorer.score([p for p, _ in chunk], [c for _, c in chunk])
            for key, value in zip(chunk, scores, strict=True):
                self._cache[key] = float(value)
        out = []
        for key in keys:
            self._cache.move_to_end(key)
            out.append(self._cache[key])
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return out


class ScorerReward:
    """A scorer as a TRL reward function: ``reward = transform(score)``, negated for a cost.

    ``kind="cost"`` (a :class:`~aligner_proxy.core.scorer.CostScorer`) returns
    ``-transform(cost)``; ``kind="reward"`` returns ``transform(score)``.
    Callable with TRL's keyword arguments; ``__name__`` is what TRL logs.
    """

    def __init__(
        self,
        scorer: Scorer,
        *,
        kind: Literal["reward", "cost"] = "cost",
        transform: Transform = "identity",
        name: str | None = None,
    ) -> None:
        self.scorer = scorer
        self.kind = kind
        self.transform = transform
        self.__name__ = name or f"{kind}:{scorer.model_id}"

    def values(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """The transformed score per pair (a cost stays a cost here: higher = worse)."""
        texts_p = [as_text(p, role="user") for p in prompts]
        texts_c = [as_text(c, role="assistant") for c in completions]
        return apply_transform(self.scorer.score(texts_p, texts_c), self.transform)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        values = self.values(prompts, completions)
        return [-v for v in values] if self.kind == "cost" else values


class CombinedReward:
    """``(r - λ·c) / (1 + λ)`` for TRL: one reward and one cost scorer, λ fixed or learned per call.

    ``multiplier``: when given, λ is ``multiplier.value`` and, after the batch
    is scored, ``multiplier.update(mean cost)`` takes one dual step; TRL's
    ``log_metric`` (when passed) records ``lambda`` and ``cost``.
    ``normalize=False`` drops the ``1 / (1 + λ)`` factor.
    """

    def __init__(
        self,
        reward: Scorer,
        cost: Scorer,
        *,
        lam: float = 1.0,
        multiplier: LagrangeMultiplier | None = None,
        reward_transform: Transform = "identity",
        cost_transform: Transform = "identity",
        normalize: bool = True,
        name: str = "reward_minus_lambda_cost",
    ) -> None:
        self.reward = ScorerReward(reward, kind="reward", transform=reward_transform)
        self.cost = ScorerReward(cost, kind="cost", transform=cost_transform)
        self.fixed_lambda = lam
        self.multiplier = multiplier
        self.normalize = normalize
        self.__name__ = name

    @property
    def lam(self) -> float:
        return self.multiplier.value if self.multiplier is not None else self.fixed_lambda

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        rewards = self.reward.values(prompts, completions)
        costs = self.cost.values(prompts, completions)
        lam = self.lam
        scale = 1.0 / (1.0 + lam) if self.normalize else 1.0
        out = [(r - lam * c) * scale for r, c in zip(rewards, costs, strict=True)]
        mean_cost = sum(costs) / max(len(costs), 1)
        if self.multiplier is not None:
            self.multiplier.update(mean_cost)
        log_metric: Callable[[str, float], None] | None = kw.get("log_metric")
        if callable(log_metric):
            log_metric("lambda", lam)
            log_metric("cost", mean_cost)
        return out


class NonRefusalReward:
    """1.0 for a non-empty answer that is not a refusal, else 0.0: the demo's stand-in helpfulness reward."""

    def __init__(self, min_words: int = 3) -> None:
        self.min_words = min_words

    @property
    def model_id(self) -> str:
        return "non-refusal-v0"

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        from aligner_proxy.core.refusal import is_refusal

        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [float(len(c.split()) >= self.min_words and not is_refusal(c)) for c in completions]


# --------------------------------------------------------------------------- registry


def _keyword(_: str, __: Path) -> Scorer:
    from aligner_proxy.core.heuristic import KeywordCostScorer

    return KeywordCostScorer()


def _non_refusal(_: str, __: Path) -> Scorer:
    return NonRefusalReward()


def _classifier(path: str, cache_dir: Path) -> Scorer:
    from aligner_proxy.core.backends.classifier import SequenceClassifierScorer

    return SequenceClassifierScorer.load(path, cache_dir=cache_dir)


def _embedding(spec: str, cache_dir: Path) -> Scorer:
    """A head directory or a shipped scorer's name (``cost-minilm-ft-v3``, the proxy's default gate)."""
    from aligner_proxy.core.loading import load_cost_scorer

    return load_cost_scorer(spec, cache_dir=cache_dir)


def _blocker(path: str, cache_dir: Path) -> Scorer:
    from training.rl.blocker import EnsembleBlocker

    return EnsembleBlocker.load(path, cache_dir=cache_dir)


def _seq2seq(path: str, cache_dir: Path) -> Scorer:
    from training.rl.seq2seq_rm import Seq2SeqRewardModel

    return Seq2SeqRewardModel.load(path, cache_dir=cache_dir)


SCORERS: dict[str, Callable[[str, Path], Scorer]] = {
    "keyword": _keyword,
    "non-refusal": _non_refusal,
    "classifier": _classifier,
    "embedding": _embedding,
    "blocker": _blocker,
    "seq2seq": _seq2seq,
}
"""Scorer specs: ``name`` or ``name:argument`` (a model directory for the model-backed ones)."""


def build_scorer(spec: str, *, cache_dir: Path = DEFAULT_CACHE_DIR) -> Scorer:
    """The scorer a spec names, e.g. ``keyword``, ``classifier:runs/cost_smollm2``, ``blocker:runs/blocker``."""
    name, _, argument = spec.partition(":")
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r} in {spec!r}; known: {', '.join(sorted(SCORERS))}")
    return SCORERS[name](argument, cache_dir)
