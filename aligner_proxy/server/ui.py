"""``/ui``: the review page (a playground and the audit log's recent rows), included when the settings enable it.

The page is static (``aligner_proxy/review/static``) and carries no data; what
it shows comes from the API it calls with the key typed into it: ``/v1/...``
for the playground and ``/ui/api/audit`` for the log, both behind the API
keys when keys are set (:data:`~aligner_proxy.server.middleware.KEYED_PREFIXES`).
It is on by default only when the proxy is bound to a loopback address
(:meth:`~aligner_proxy.server.settings.Settings.ui_enabled`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, get_args

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from aligner_proxy.core.audit import AuditStore, AuditStoreError
from aligner_proxy.core.vocabulary import Status
from aligner_proxy.review.page import ASSETS, LIVE_POLICY, ReviewRow, asset
from aligner_proxy.server.errors import AlignerProxyError, InvalidRequestError
from aligner_proxy.server.openapi import error_responses

router = APIRouter(include_in_schema=False)

_STATUSES = frozenset(get_args(Status))


class AuditRows(BaseModel):
    """``/ui/api/audit``'s answer: whether the log is on, and its newest rows."""

    enabled: bool
    rows: list[ReviewRow]


class AuditUnavailableError(AlignerProxyError):
    status_code = 503
    error_type = "server_error"


def _file(name: str) -> Response:
    headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
    if name == "review.html":
        headers |= {"content-security-policy": LIVE_POLICY, "x-frame-options": "DENY"}
    return Response(asset(name), media_type=ASSETS[name] + "; charset=utf-8", headers=headers)


@router.get("/ui")
async def ui_root() -> Response:
    return RedirectResponse("/ui/")


@router.get("/ui/")
async def ui_page() -> Response:
    return _file("review.html")


@router.get("/ui/review.js")
async def ui_script() -> Response:
    return _file("review.js")


@router.get("/ui/review.css")
async def ui_style() -> Response:
    return _file("review.css")


def _read_recent(path: str, limit: int, status: str | None) -> list[ReviewRow]:
    store = AuditStore.open_readonly(path)
    try:
        return [ReviewRow.model_validate(record.model_dump()) for record in store.recent(limit=limit, status=status)]
    finally:
        store.close()


@router.get("/ui/api/audit", responses=error_responses())
async def ui_audit(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    status: str | None = None,
) -> AuditRows:
    if status and status not in _STATUSES:
        raise InvalidRequestError(f"status: expected one of {', '.join(sorted(_STATUSES))}", param="status")
    path = request.app.state.proxy.settings.audit_log
    if path is None:
        return AuditRows(enabled=False, rows=[])
    try:
        rows = await asyncio.to_thread(_read_recent, str(path), limit, status or None)
    except AuditStoreError as exc:
        raise AuditUnavailableError(f"The audit log cannot be read: {exc}") from None
    return AuditRows(enabled=True, rows=rows)
