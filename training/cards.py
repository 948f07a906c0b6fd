"""Model cards: a ``README.md`` written next to every set of trained weights.

A card says what the weights are (base model), what they were trained on and
under which licences, how (the full config), at what cost (wall time, steps,
hardware) and how well they did (a metrics table the trainer passes in). The
shared data sets carry non-commercial licences (see ``shared/data/README.md``);
those terms carry over to weights trained on them, and the card says so.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataSource:
    """A public data set a record's ``source`` can come from."""

    name: str
    origin: str
    licence: str
    non_commercial: bool


KNOWN_SOURCES: dict[str, DataSource] = {
    "pku": DataSource(
        "PKU-SafeRLHF (mini sample)", "ThuCCSLab/JailbreakEval data/Safe-RLHFmini.csv", "CC BY-NC 4.0", True
    ),
    "do-not-answer": DataSource("Do-Not-Answer", "Libr-AI/do-not-answer (English original)", "CC BY-NC-SA 4.0", True),
    "hh-rlhf": DataSource("Anthropic HH-RLHF harmless-base (test)", "anthropics/hh-rlhf", "MIT", False),
    "safety-only": DataSource(
        "safety-tuned-llamas safety-only instructions", "vinid/safety-tuned-llamas", "CC BY-NC 4.0", True
    ),
    "sensitive-benign": DataSource(
        "harmful-sounding benign questions and answers written by this project",
        "training/data/sensitive_benign.jsonl (answers: the file's, or SmolLM2-135M-Instruct's)",
        "Apache-2.0",
        False,
    ),
    "harmless": DataSource(
        "Harmless instructions (Alpaca-derived)",
        "busycalibrating/AdversariaLLM data/refusal_direction/harmless_train.json",
        "CC BY-NC 4.0 (Alpaca data)",
        True,
    ),
}
"""Fallback for source names the corpus table does not list, matched by substring in this order."""


def lookup_source(source: str) -> DataSource | None:
    """The data set behind a record's ``source``: the corpus builder's licence table by exact name
    (:data:`training.data.corpus.LICENCES`), else the first :data:`KNOWN_SOURCES` key it contains."""
    from training.data.corpus import LICENCES

    if source in LICENCES:
        origin, licence = LICENCES[source]
        return DataSource(source, origin, licence, "NC" in licence)
    key = source.lower().replace("_", "-")
    return next((found for needle, found in KNOWN_SOURCES.items() if needle in key), None)


@dataclass(frozen=True)
class TrainingCost:
    """What a run cost: wall time, optimiser steps and the machine it ran on."""

    wall_seconds: float
    steps: int
    hardware: str

    @classmethod
    def measure(cls, *, wall_seconds: float, steps: int) -> TrainingCost:
        """Fill ``hardware`` from this machine (CPU model and cores, or the GPU torch sees)."""
        import torch

        cpu = platform.processor() or platform.machine()
        hardware = f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            hardware = f"{torch.cuda.get_device_name(0)}; " + hardware
        return cls(wall_seconds=wall_seconds, steps=steps, hardware=hardware)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_model_card(
    *,
    title: str,
    base_model: str,
    sources: Mapping[str, int],
    recipe: Mapping[str, Any],
    cost: TrainingCost,
    metrics: Mapping[str, Mapping[str, Any]],
) -> str:
    """The card as Markdown. ``sources`` counts training records per ``source``; ``metrics`` is
    ``{table name: {metric: value}}``, one table per split or evaluation."""
    lines = [f"# {title}", "", f"Base model: **{base_model}**.", "", "## Training data", ""]
    lines += ["| source | records | data set | licence |", "| --- | ---: | --- | --- |"]
    non_commercial = False
    unknown = []
    for source, count in sorted(sources.items()):
        found = lookup_source(source)
        if found is None:
            unknown.append(source)
            lines.append(f"| `{source}` | {count} | unknown | **unknown: check before use** |")
            continue
        non_commercial |= found.non_commercial
        dataset = found.origin if found.name == source else f"{found.name} ({found.origin})"
        lines.append(f"| `{source}` | {count} | {dataset} | {found.licence} |")
    lines.append("")
    if non_commercial:
        lines.append(
            "**Licence of these weights.** Part of the training data is licensed for non-commercial use only "
            "(CC BY-NC 4.0 / CC BY-NC-SA 4.0). Those terms carry over to these weights: use them for research and "
            "other non-commercial purposes only, and share derivatives of the CC BY-NC-SA data under the same terms."
        )
    else:
        lines.append("No non-commercial data set was used; check each source's licence before redistribution.")
    if unknown:
        lines.append(f"Sources without a known licence: {', '.join(f'`{s}`' for s in unknown)}.")
    lines += ["", "## Cost", "", "| wall time | steps | hardware |", "| ---: | ---: | --- |"]
    lines.append(f"| {cost.wall_seconds / 60:.1f} min | {cost.steps} | {cost.hardware} |")
    lines += ["", "## Metrics", ""]
    for name, table in metrics.items():
        lines += [f"### {name}", "", "| metric | value |", "| --- | ---: |"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in table.items()]
        lines.append("")
    lines += ["## Recipe", "", "```json", json.dumps(dict(recipe), indent=2, default=str), "```", ""]
    return "\n".join(lines)


def write_model_card(directory: str | Path, **card: Any) -> Path:
    """Write :func:`render_model_card` output to ``directory/README.md`` and return its path."""
    path = Path(directory) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(**card), encoding="utf-8")
    return path
