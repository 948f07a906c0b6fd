"""Weak supervision from corrections: the SFT and preference sets a weak Aligner's rewrites make, with data cards.

Stage 3 of :mod:`training.weak_to_strong`, apart so that the rule for what
becomes a training row (every usable correction for SFT; only changed answers
for preference pairs) reads on its own and other scripts can reuse it.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SFT_RULE = (
    "Prompt → the final answer: the weak Aligner's correction where it was kept, the policy's own answer where "
    "the gate passed it (gated mode) or the correction was not less costly."
)
PREFERENCE_RULE = (
    "chosen = the weak Aligner's correction, rejected = the policy's original answer; "
    "only rows where the correction changed the answer."
)


def mean(values: Sequence[float]) -> float:
    """The mean, NaN for no values (a report cell, not an error)."""
    return sum(values) / len(values) if values else float("nan")


def build_supervision(corrections: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The SFT rows (every usable correction) and preference rows (only where the correction changed the answer)."""
    sft: list[dict[str, Any]] = []
    preference: list[dict[str, Any]] = []
    for r in corrections:
        correction, answer = r.get("correction"), r.get("answer")
        if r.get("error") is not None or not isinstance(correction, str) or not isinstance(answer, str):
            continue
        if not correction.strip():
            continue
        meta = {"id": r["row_id"], "kind": r["kind"], "source": r["source"]}
        sft.append(
            {
                **meta,
                "prompt": r["prompt"],
                "completion": correction,
                "original": answer,
                "status": r["status"],
                "cost_before": r["cost_before"],
                "cost_after": r["cost_after"],
            }
        )
        if correction.strip() != answer.strip():
            preference.append(
                {
                    **meta,
                    "prompt": r["prompt"],
                    "chosen": correction,
                    "rejected": answer,
                    "cost_chosen": r["cost_after"],
                    "cost_rejected": r["cost_before"],
                }
            )
    return sft, preference


def save_dataset(rows: list[dict[str, Any]], directory: Path, card: str) -> None:
    """``Dataset.save_to_disk`` plus a ``README.md`` data card, replacing any earlier copy atomically."""
    from datasets import Dataset

    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    Dataset.from_list(rows).save_to_disk(str(tmp))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def data_card(name: str, rows: list[dict[str, Any]], *, rule: str, models: dict[str, str]) -> str:
    """A short Markdown card: what the rows are, how they were made, from which prompts and under what licences."""
    from training.cards import lookup_source

    lines = [f"# Weak-to-strong {name} set", "", rule, "", f"Rows: **{len(rows)}**.", "", "## Models", ""]
    lines += [f"- {role}: `{spec}`" for role, spec in models.items()]
    lines += ["", "## Prompts", "", "| source | kind | rows | licence |", "| --- | --- | ---: | --- |"]
    for (source, kind), count in sorted(Counter((r["source"], r["kind"]) for r in rows).items()):
        found = lookup_source(source)
        lines.append(f"| `{source}` | {kind} | {count} | {found.licence if found else 'unknown: check before use'} |")
    lines += ["", "Answers and corrections are model outputs; the prompts' licences carry over to this set.", ""]
    return "\n".join(lines)


def save_supervision(
    sft: list[dict[str, Any]], preference: list[dict[str, Any]], directory: Path, models: dict[str, str]
) -> None:
    """Both sets under ``directory`` (``sft/``, ``preference/``), each with its card."""
    save_dataset(sft, directory / "sft", data_card("SFT", sft, rule=SFT_RULE, models=models))
    save_dataset(
        preference, directory / "preference", data_card("preference", preference, rule=PREFERENCE_RULE, models=models)
    )


def supervision_stats(
    corrections: list[dict[str, Any]], sft: list[dict[str, Any]], preference: list[dict[str, Any]], threshold: float
) -> dict[str, float]:
    """Counts and the scorer's mean cost and unsafe share before / after correction, for the round's report."""
    ok = [r for r in corrections if r.get("error") is None and r.get("cost_before") is not None]
    before = [float(r["cost_before"]) for r in ok]
    after = [float(r["cost_after"] if r["cost_after"] is not None else r["cost_before"]) for r in ok]
    return {
        "answers": float(len(corrections)),
        "failed": float(len(corrections) - len(ok)),
        "sft_rows": float(len(sft)),
        "preference_rows": float(len(preference)),
        "mean_cost_before": mean(before),
        "mean_cost_after": mean(after),
        "unsafe_before": mean([float(c > threshold) for c in before]),
        "unsafe_after": mean([float(c > threshold) for c in after]),
    }
