"""Text-generation and scoring backends behind the core interfaces.

Each module implements :class:`aligner_proxy.core.generation.TextGenerator` (or
:class:`aligner_proxy.core.scorer.CostScorer`) on one engine: ``transformers``
(in-process, CPU-friendly, micro-batched), ``remote`` (any OpenAI-compatible
``/v1/completions`` server), ``vllm`` (in-process vLLM on a GPU) and
``classifier`` (a one-logit sequence classifier as a cost scorer). Importing
this package imports no heavy library; each backend imports its engine when a
model is loaded.

Failures surface as :class:`BackendError` or one of its subclasses, so callers
can catch one type and map it to a single HTTP status.
"""

from __future__ import annotations

from aligner_proxy.core.errors import (
    BackendConnectionError,
    BackendError,
    BackendResponseError,
    BackendUnavailableError,
)

__all__ = [
    "BackendConnectionError",
    "BackendError",
    "BackendResponseError",
    "BackendUnavailableError",
]
