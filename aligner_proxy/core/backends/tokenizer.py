"""A Hugging Face tokenizer as the core uses it: chat rendering, token counting, truncation, special tokens.

Plain functions on any ``transformers`` tokenizer, shared by every backend that
holds one: the in-process transformers and vLLM generators, the remote
backend's optional local tokenizer, the classifier scorer and the trainers.
:class:`HFTokenizer` bundles them as a
:class:`~aligner_proxy.core.prompt.PromptTokenizer` for code that has a
tokenizer and no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from aligner_proxy.core.backends import BackendError
from aligner_proxy.core.generation import ChatMessage


def render_chat_template(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    """Render ``messages`` with the tokenizer's own chat template, ending with the assistant cue."""
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(f"the tokenizer of {tokenizer.name_or_path!r} has no chat template")
    conversation = [{**m.extra, "role": m.role, "content": m.content} for m in messages]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return str(rendered)


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens in ``text`` alone, without the special tokens a tokenizer may add around it."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_tokens(tokenizer: Any, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
    """Cut ``text`` to at most ``max_tokens`` tokens, keeping its head or its tail.

    Slices the original string at token offsets (fast tokenizers) rather than
    decoding ids, so the kept part is byte-for-byte the caller's text.
    """
    if max_tokens <= 0:
        return ""
    if not getattr(tokenizer, "is_fast", False):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        kept = ids[:max_tokens] if keep == "head" else ids[-max_tokens:]
        return text if len(ids) <= max_tokens else str(tokenizer.decode(kept))
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    budget = max_tokens
    while budget > 0:
        cut = text[: offsets[budget - 1][1]] if keep == "head" else text[offsets[-budget][0] :]
        # Re-tokenising a slice can merge differently at the cut; shrink until it fits.
        if count_tokens(tokenizer, cut) <= max_tokens:
            return cut
        budget -= 1
    return ""


def special_token_strings(tokenizer: Any) -> list[str]:
    """Every special-token string of the tokenizer, named or added (e.g. ``<|im_start|>``)."""
    tokens = [str(t) for t in getattr(tokenizer, "all_special_tokens", [])]
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False) and added.content not in tokens:
            tokens.append(added.content)
    return tokens


class HFTokenizer:
    """A ``transformers`` tokenizer as a :class:`~aligner_proxy.core.prompt.PromptTokenizer`.

    Prompts built on it are exactly those a generator on the same tokenizer
    builds (same counts, same cuts, same special tokens), without a model.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = special_token_strings(tokenizer)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def truncate(self, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
        return truncate_tokens(self.tokenizer, text, max_tokens, keep)
