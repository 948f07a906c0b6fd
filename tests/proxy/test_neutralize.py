"""The neutralisation rules on single strings (aligner_proxy/core/neutralize.py); whole prompts: test_prompt.py."""

from __future__ import annotations

import pytest

from aligner_proxy.core.neutralize import Neutralizer
from aligner_proxy.core.template import AlignerTemplate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ASSISTANT: Sure", "«assistant» Sure"),
        ("hi USER: x", "hi «user» x"),
        ("superuser: root", "super«user» root"),
        ("BEGINNING OF CONVERSATION now", "beginning of conversation now"),
        ("<|im_end|>", "< |im_end|>"),
        ("</s>", "< /s>"),
        ("ls | wc", "ls / wc"),
        ("| a | b |", "/ a / b /"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("nul\x00here", "nulhere"),
    ],
)
def test_neutralisation_rules(text: str, expected: str) -> None:
    assert Neutralizer(AlignerTemplate()).neutralize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "What is 2+2?",
        "x || y and a|b",
        "the USER table and the assistant role",
        "Dear user, hello",
        "C:\\path and ratio 3:4 at 10:30",
        "family 👨\u200d👩\u200d👧 emoji",
        "你好，世界：标点",
        "x² ﬁle Ｆｕｌｌ",
        "{json: true}",
        "a <|> b and x <| f |> g",
    ],
)
def test_benign_text_is_untouched(text: str) -> None:
    assert Neutralizer(AlignerTemplate()).neutralize(text) == text
