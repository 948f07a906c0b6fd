"""Validating an Aligner template and reading its labels (aligner_proxy/core/template.py)."""

from __future__ import annotations

import pytest

from aligner_proxy.core.template import AlignerTemplate, TemplateError


@pytest.mark.parametrize(
    "template",
    [
        "no fields at all",
        "{question} only",
        "{question} | {question} | {answer}",
        "{question} | {answer} {other}",
        "{question!r} | {answer}",
        "{question:>10} | {answer}",
        "{} | {answer}",
        "{question} | {answer",
        "{question}   {answer}",
    ],
)
def test_invalid_template_is_rejected(template: str) -> None:
    with pytest.raises(TemplateError) as info:
        AlignerTemplate(template)
    assert isinstance(info.value, ValueError)
    assert "{question}" in str(info.value) or "separator" in str(info.value) or "template" in str(info.value)


def test_default_template_labels() -> None:
    template = AlignerTemplate()
    assert template.role_labels == ("BEGINNING OF CONVERSATION", "USER", "ASSISTANT")
    assert template.markers == ("BEGINNING OF CONVERSATION:", "USER:", "ASSISTANT:", " | ")
