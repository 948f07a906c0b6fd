"""The core's exceptions: what a model, a backend or the alignment stage can fail with.

The core knows nothing of HTTP. The proxy maps each of these to a status and an
OpenAI error type in one place (``aligner_proxy.server.errors.from_core``); the
CLI turns them into one-line messages.
"""

from __future__ import annotations


class ModelNotFoundError(Exception):
    """A model spec names nothing that can be loaded (missing wheel, missing directory)."""


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


class AlignmentError(Exception):
    """The scorer or the corrector failed and the policy fails closed: the caller must not get the answer.

    ``message`` is safe to show a client (the failure's kind); ``detail`` is for the operator's own
    records (logs, a batch run's error rows), its secrets already redacted."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
