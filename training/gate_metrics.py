"""What a gate is judged on: ranking (AUROC), recall at a fixed false-positive rate, and a calibrated threshold.

A proxy's gate decides which answers go to the corrector. What a user feels
is the pair (share of harmful answers caught, share of benign answers
disturbed), so the numbers here are read at a *false-positive rate on benign
answers*: :func:`calibrate` picks the threshold that flags at most a target
share of safe answers, and :func:`binary_metrics` reports recall and FPR there,
beside the threshold-free AUROC.

Scores of scorers that do not change between runs (the shipped baselines) are
cached on disk by :class:`ScoreCache`, so comparing a new gate with them on
every held-out group costs their scoring time once.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aligner_proxy.core.scorer import CostScorer, score_batched
from training.data.records import PreferencePair, SafetyLabel


def calibrate(safe_costs: Sequence[float], target_fpr: float) -> float:
    """The smallest threshold at which at most ``target_fpr`` of ``safe_costs`` lie strictly above it.

    The gate flags ``cost > threshold``; with ``n`` safe answers at most
    ``floor(target_fpr * n)`` of them are flagged at the returned value."""
    if not safe_costs:
        raise ValueError("no safe answers to calibrate on")
    ranked = sorted(safe_costs, reverse=True)
    # The epsilon keeps a rate read off this very set (k / n) from rounding down to k - 1.
    return float(ranked[min(math.floor(target_fpr * len(ranked) + 1e-9), len(ranked) - 1)])


def auroc(costs: Sequence[float], unsafe: Sequence[int]) -> float:
    """Probability that an unsafe answer costs more than a safe one (ties count half); NaN with one class."""
    positives = [c for c, u in zip(costs, unsafe, strict=True) if u]
    negatives = [c for c, u in zip(costs, unsafe, strict=True) if not u]
    if not positives or not negatives:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(list(unsafe), list(costs)))


def percent(rate: float) -> str:
    """3.5 % as ``3.5%`` and 5 % as ``5%`` (a calibration target may be any rate)."""
    return f"{100 * rate:g}%"


def recall_at_fpr(costs: Sequence[float], unsafe: Sequence[int], fpr: float) -> float:
    """Recall at the threshold that flags at most ``fpr`` of this set's safe answers: how two scorers compare
    at one operating point (one scorer's false-positive rate at its own threshold, given to the other)."""
    own = calibrate([c for c, u in zip(costs, unsafe, strict=True) if not u], fpr)
    return sum(c > own for c, u in zip(costs, unsafe, strict=True) if u) / max(sum(unsafe), 1)


def binary_metrics(costs: Sequence[float], unsafe: Sequence[int], threshold: float, *, fpr: float = 0.05) -> dict:
    """AUROC, recall at ``fpr`` (threshold chosen on this set's own safe answers, so an upper bound of what a
    calibrated gate gets), and recall / FPR / accuracy at the given ``threshold``."""
    n_unsafe = sum(unsafe)
    n_safe = len(unsafe) - n_unsafe
    flagged = [c > threshold for c in costs]
    out: dict[str, Any] = {"n": len(costs), "n_unsafe": n_unsafe, "auroc": auroc(costs, unsafe)}
    if n_safe and n_unsafe:
        out[f"recall_at_{round(fpr * 100)}pct_fpr"] = recall_at_fpr(costs, unsafe, fpr)
    if n_unsafe:
        out["recall_at_threshold"] = sum(f for f, u in zip(flagged, unsafe, strict=True) if u) / n_unsafe
    if n_safe:
        out["fpr_at_threshold"] = sum(f for f, u in zip(flagged, unsafe, strict=True) if not u) / n_safe
    out["accuracy_at_threshold"] = sum(f == bool(u) for f, u in zip(flagged, unsafe, strict=True)) / max(len(costs), 1)
    return out


def pair_accuracy(scorer: CostScorer, pairs: Sequence[PreferencePair], *, batch_size: int = 64) -> float:
    """Share of pairs whose unsafer answer costs more than the safer one."""
    ranked = [p for p in pairs if p.safer is not None]
    unsafer = [p.rejected if p.safer == "chosen" else p.chosen for p in ranked]
    safer = [p.chosen if p.safer == "chosen" else p.rejected for p in ranked]
    prompts = [p.prompt for p in ranked]
    cu = score_batched(scorer, prompts, unsafer, batch_size=batch_size)
    cs = score_batched(scorer, prompts, safer, batch_size=batch_size)
    return sum(u > s for u, s in zip(cu, cs, strict=True)) / max(len(ranked), 1)


class ScoreCache:
    """Costs of a fixed scorer by (question, answer), kept in one JSONL file per scorer id under ``directory``.

    Only for scorers whose output never changes (shipped weights, the
    heuristic); a newly trained gate is always scored afresh."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, scorer_id: str) -> Path:
        return self.directory / f"{hashlib.sha256(scorer_id.encode()).hexdigest()[:16]}.jsonl"

    @staticmethod
    def _key(question: str, answer: str) -> str:
        return hashlib.sha256(f"{question}\x1f{answer}".encode()).hexdigest()

    def score(
        self, scorer: CostScorer, labels: Sequence[SafetyLabel], *, batch_size: int = 64
    ) -> tuple[list[float], float]:
        """Costs in ``labels`` order and the ms per item of the items scored now (NaN when all were cached)."""
        path = self._path(scorer.model_id)
        known: dict[str, float] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    known[row["k"]] = row["c"]
        keys = [self._key(x.question, x.answer) for x in labels]
        todo = [i for i, k in enumerate(keys) if k not in known]
        ms = float("nan")
        if todo:
            started = time.perf_counter()
            costs = score_batched(
                scorer, [labels[i].question for i in todo], [labels[i].answer for i in todo], batch_size=batch_size
            )
            ms = 1000 * (time.perf_counter() - started) / len(todo)
            self.directory.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                for i, cost in zip(todo, costs, strict=True):
                    known[keys[i]] = cost
                    handle.write(json.dumps({"k": keys[i], "c": cost}) + "\n")
        return [known[k] for k in keys], ms
