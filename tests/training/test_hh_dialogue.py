"""The HH-RLHF dialogue format (training/data/hh_dialogue.py): turns parsed and rendered back."""

from __future__ import annotations

from training.data.hh_dialogue import Turn, parse_hh_dialogue, render_dialogue


def test_parse_and_render_hh_dialogue() -> None:
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?\n\nAssistant: Ask a locksmith."
    turns = parse_hh_dialogue(text)
    assert turns == [
        Turn("Human", "Hi there"),
        Turn("Assistant", "Hello!"),
        Turn("Human", "How do I pick a lock?"),
        Turn("Assistant", "Ask a locksmith."),
    ]
    rendered = render_dialogue(turns[:3])
    assert rendered == "Human: Hi there\n\nAssistant: Hello!\n\nHuman: How do I pick a lock?"
    assert parse_hh_dialogue(rendered) == turns[:3]
    # A multi-line turn stays one turn.
    assert parse_hh_dialogue("\n\nHuman: line one\nline two\n\nAssistant: ok") == [
        Turn("Human", "line one\nline two"),
        Turn("Assistant", "ok"),
    ]
