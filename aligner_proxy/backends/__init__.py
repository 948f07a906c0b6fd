"""Text-generation and scoring backends behind the core interfaces.

Each module implements :class:`aligner_proxy.generation.TextGenerator` (or
:class:`aligner_proxy.scorer.CostScorer`) on one engine: ``transformers``
(in-process, CPU-friendly, micro-batched), ``remote`` (any OpenAI-compatible
``/v1/completions`` server), ``vllm`` (in-process vLLM on a GPU) and
``classifier`` (a one-logit sequence classifier as a cost scorer). Importing
this package imports no heavy library; each backend imports its engine when a
model is loaded.

Failures surface as :class:`BackendError` or one of its subclasses, so callers
can catch one type and map it to a single HTTP status.
"""

from __future__ import annotations


class BackendError(Exception):
    """A generation or scoring backend failed."""


class BackendUnavailableError(BackendError):
    """The backend cannot run here: an optional dependency is missing or the model cannot be used."""


class BackendConnectionError(BackendError):
    """A remote backend could not be reached, or did not answer in time, after retries."""


class BackendResponseError(BackendError):
    """A remote backend answered with an error status or a body that is not a valid completion."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


__all__ = [
    "BackendConnectionError",
    "BackendError",
    "BackendResponseError",
    "BackendUnavailableError",
]
