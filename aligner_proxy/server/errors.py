"""The proxy's exception tree, each class mapped once to an HTTP status and an OpenAI error type.

Server code raises these; the app turns them into OpenAI-shaped error bodies
(``{"error": {"message", "type", "param", "code"}}``) in exactly one place
(``app.py``). The core raises its own HTTP-free exceptions
(:mod:`aligner_proxy.core.errors`); :func:`from_core` is the one place they get
a status. Callers can catch precisely: ``UpstreamError`` for anything the
upstream did, ``AlignmentUnavailableError`` for the scorer / corrector stage.
"""

from __future__ import annotations

from aligner_proxy.core import errors as core_errors


class AlignerProxyError(Exception):
    """Base class. ``status_code`` / ``error_type`` / ``code`` decide the HTTP answer; ``headers`` go with it
    (e.g. a relayed ``Retry-After``)."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers
        if code is not None:
            self.code = code


class InvalidRequestError(AlignerProxyError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(AlignerProxyError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class UnknownModelError(AlignerProxyError):
    """The request names a model this proxy does not serve."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class PolicyLockedError(AlignerProxyError):
    """The request asks to relax a policy this client may not relax (the policy floor)."""

    status_code = 403
    error_type = "permission_error"
    code = "policy_locked"


class RequestTooLargeError(AlignerProxyError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class NotReadyError(AlignerProxyError):
    """The models are still loading."""

    status_code = 503
    error_type = "server_error"
    code = "not_ready"


class UpstreamError(AlignerProxyError):
    """The upstream failed. A 4xx answer of the upstream keeps its status and message."""

    status_code = 502
    error_type = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        if status_code is not None:
            self.status_code = status_code
        if error_type is not None:
            self.error_type = error_type


class UpstreamUnavailableError(UpstreamError):
    status_code = 503
    code = "upstream_unavailable"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class AlignmentUnavailableError(AlignerProxyError):
    """The scorer or the corrector failed and the route's failure policy is ``fail_closed``."""

    status_code = 503
    error_type = "alignment_error"
    code = "alignment_unavailable"


def from_core(exc: Exception) -> AlignerProxyError | None:
    """The proxy error a core exception answers with, or ``None`` for one that is a bug."""
    if isinstance(exc, AlignerProxyError):
        return exc
    if isinstance(exc, core_errors.AlignmentError):
        return AlignmentUnavailableError(exc.message)
    return None
