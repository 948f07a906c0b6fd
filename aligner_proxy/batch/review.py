"""A batch output's rows as the review page shows them: what ``aligner-proxy review`` reads.

Each output row is its input row plus :class:`~aligner_proxy.batch.correct.CorrectionFields`;
the question and the answer are read with the same :class:`~aligner_proxy.batch.correct.RowMapping`
the run used (so a ``messages`` row shows its last user turn), the final text is ``correction``.
A row that failed shows its error, with the answer on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aligner_proxy.batch.correct import RowMapping
from aligner_proxy.batch.readers import RowError
from aligner_proxy.batch.writer import ID_KEY
from aligner_proxy.review.page import ReviewRow


def review_rows(records: Iterable[Mapping[str, Any]], mapping: RowMapping | None = None) -> list[ReviewRow]:
    """``records`` (a batch output's lines) as review rows; a record that is not a batch row raises
    ``ValueError`` saying which and why."""
    mapping = mapping or RowMapping()
    rows = []
    for number, record in enumerate(records, start=1):
        try:
            item = mapping.to_input(record)
        except RowError as exc:
            raise ValueError(f"row {number}: not a batch output row: {exc}") from None
        if not isinstance(record.get("status"), str):
            raise ValueError(f"row {number}: no 'status' field: is this the output of 'aligner-proxy correct'?")
        question = item.question
        if not isinstance(question, str):
            question = next((m.content for m in reversed(question) if m.role == "user"), "")
        correction = record.get("correction")
        rows.append(
            ReviewRow(
                id=record.get(ID_KEY, number),
                question=question,
                original=item.answer,
                final=correction if isinstance(correction, str) else item.answer,
                status=record["status"],
                cost_before=record.get("cost_before"),
                cost_after=record.get("cost_after"),
                threshold=record.get("threshold"),
                error=record.get("error"),
            )
        )
    return rows
