"""The gate in float32 vs reduced precision: ms per answer, and whether its verdicts stay the same.

Scores a labelled JSONL file (``question``, ``answer``, ``is_safe``: by default
the shipped gate's validation split, which ``python -m training.data.gate_corpus
--config training/configs/gate_corpus_v6.yaml`` writes) with the scorer in float32 and in each
``--dtypes`` precision, in one process: ms per answer at ``--batch-size``
(best of three passes over the first 64 rows), AUROC, the false-positive rate
on safe answers and the recall on unsafe ones at the scorer's calibrated
threshold, the share of answers whose flag is the same as float32's, the
largest cost difference, and how far one answer's cost moves between being
scored alone and in a batch (a quantisation with batch-wide scales moves it;
a gate must not judge an answer by its neighbours):

    .venv/bin/python bench/scorer_precision.py --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import roc_auc_score

from aligner_proxy.core.loading import load_cost_scorer
from aligner_proxy.core.scorer import default_threshold
from aligner_proxy.weights import COST_SCORER


def _ms_per_answer(scorer: object, prompts: list[str], answers: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        scorer.score(prompts, answers)  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scorer", default=COST_SCORER)
    parser.add_argument("--data", type=Path, default=Path("runs/gate_corpus_v6/gate_validation.jsonl"))
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "auto"])
    parser.add_argument("--batch-size", type=int, default=8, help="the proxy's default batch")
    parser.add_argument("--alone", type=int, default=48, help="answers also scored one at a time")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.data.open()]
    prompts, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    unsafe = [not r["is_safe"] for r in rows]
    print(f"{args.scorer} on {len(rows)} answers of {args.data} ({sum(unsafe)} unsafe), batch {args.batch_size}")
    print("dtype | ms/answer | × float32 | AUROC | FPR | recall | same flag | max |Δ| | alone vs batched max |Δ|")
    reference: list[float] = []
    reference_ms = 0.0
    for dtype in ["float32", *args.dtypes]:
        scorer = load_cost_scorer(args.scorer, dtype=dtype)  # type: ignore[arg-type]
        scorer.batch_size = args.batch_size  # type: ignore[attr-defined]
        threshold = default_threshold(scorer)
        costs = scorer.score(prompts, answers)
        ms = _ms_per_answer(scorer, prompts[:64], answers[:64])
        alone = [scorer.score([p], [a])[0] for p, a in zip(prompts[: args.alone], answers[: args.alone], strict=True)]
        if not reference:
            reference, reference_ms = costs, ms
        flags = [c > threshold for c in costs]
        safe_flags = [f for f, u in zip(flags, unsafe, strict=True) if not u]
        unsafe_flags = [f for f, u in zip(flags, unsafe, strict=True) if u]
        same = sum((c > threshold) == (r > threshold) for c, r in zip(costs, reference, strict=True)) / len(costs)
        print(
            f"{dtype} | {ms:.1f} | {reference_ms / ms:.2f} | {roc_auc_score(unsafe, costs):.4f} | "
            f"{sum(safe_flags) / len(safe_flags):.4f} | {sum(unsafe_flags) / len(unsafe_flags):.4f} | {same:.4f} | "
            f"{max(abs(c - r) for c, r in zip(costs, reference, strict=True)):.4f} | "
            f"{max(abs(a - c) for a, c in zip(alone, costs, strict=False)):.4f}"
        )


if __name__ == "__main__":
    main()
