"""Copy speculation for one greedy sequence: draft what followed the last few tokens before, verify in one pass.

A corrector that keeps a good answer mostly copies it. Drafting the tokens
that followed the current n-gram where it last appeared in the prompt, and
checking them all in one forward pass, turns many decoding steps into one;
every drafted token the model would not have chosen is dropped, so the output
is plain greedy decoding's (up to the floating-point rounding of a wider
forward pass, which can only matter at an exact tie between two tokens).

transformers' prompt lookup (``generate(prompt_lookup_num_tokens=...)``) does
the same, but falls back to matching the last *one* or *two* tokens. A
correction that does not copy (a refusal of a harmful answer) still shares
such n-grams with the answer ("the", "I'm", "of a"); each match drafts tokens
that are then rejected, and each rejected draft widens a forward pass for
nothing. On SmolLM2 with the shipped corrector that made refusals 1.3–1.8×
*slower* than plain greedy (docs/benchmarks.md). It has no minimum match
length, so the loop is written here: a draft needs at least ``min_ngram``
matching tokens (3 by default), below which the step decodes one token as
plain greedy does. The loop uses the model's forward pass and its key-value
cache (``DynamicCache.crop`` discards rejected drafts) and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

MIN_NGRAM = 3
"""Matching tokens a draft needs: one- and two-token matches are mostly coincidences (docs/benchmarks.md)."""
MAX_NGRAM = 4
"""The longest n-gram tried first: a longer match says more about what follows."""


def find_draft(
    tokens: Sequence[int], *, max_draft: int, min_ngram: int = MIN_NGRAM, max_ngram: int = MAX_NGRAM
) -> list[int]:
    """Up to ``max_draft`` tokens that followed the first earlier occurrence of ``tokens``' last n-gram.

    The longest n-gram (``max_ngram`` down to ``min_ngram``) with an earlier occurrence followed by at
    least one token wins; at its first occurrence (transformers' prompt lookup picks the same one).
    Empty when nothing of at least ``min_ngram`` tokens repeats."""
    length = len(tokens)
    if max_draft <= 0:
        return []
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        tail = list(tokens[length - n :])
        first = tail[0]
        for start in range(length - n):  # occurrences ending before the tail itself
            if tokens[start] == first and list(tokens[start : start + n]) == tail:
                follow = start + n
                return list(tokens[follow : min(follow + max_draft, length)])
    return []


def speculative_greedy(
    model: Any,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    draft_tokens: int,
    should_stop: Callable[[list[int]], bool] | None = None,
    min_ngram: int = MIN_NGRAM,
) -> list[int]:
    """Greedy decoding of one sequence with copy speculation: the new token ids, the end-of-sequence token
    included when one ends it (what ``generate`` returns past the prompt, for one row).

    ``should_stop(sequence)`` is asked after every new token, with the prompt and the tokens so far (the
    stopping criteria of ``generate``: a loop guard, a cancel flag); when it says yes, decoding ends with
    that token, as it would in ``generate``."""
    import torch
    from transformers import DynamicCache

    sequence = list(prompt_ids)
    cache = DynamicCache()
    cache_arg = {_cache_keyword(model): cache}
    out = model(input_ids=torch.tensor([sequence]), use_cache=True, logits_to_keep=1, **cache_arg)
    next_token = int(out.logits[0, -1].argmax())
    generated: list[int] = []
    while True:
        # ``next_token`` is decided; the cache holds every token of ``sequence`` before it.
        generated.append(next_token)
        sequence.append(next_token)
        if _done(next_token, generated, sequence, max_new_tokens, eos_ids, should_stop):
            return generated
        room = max_new_tokens - len(generated) - 1  # the pass after the drafts adds one token of its own
        draft = find_draft(sequence, max_draft=min(draft_tokens, room), min_ngram=min_ngram)
        step = torch.tensor([[next_token, *draft]])
        out = model(input_ids=step, use_cache=True, **cache_arg)
        choices = out.logits[0].argmax(dim=-1).tolist()  # the greedy token after each position of ``step``
        accepted = 0
        while accepted < len(draft) and draft[accepted] == choices[accepted]:
            accepted += 1
        if accepted < len(draft):  # drop the rejected drafts' keys and values (a negative count: tokens to remove)
            cache.crop(accepted - len(draft))
        for token in draft[:accepted]:
            generated.append(token)
            sequence.append(token)
            if _done(token, generated, sequence, max_new_tokens, eos_ids, should_stop):
                return generated
        next_token = int(choices[accepted])


def _cache_keyword(model: Any) -> str:
    """``cache``, the forward argument's name from transformers 5.2x on, or ``past_key_values`` before it."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model passes it through
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _done(
    token: int,
    generated: list[int],
    sequence: list[int],
    max_new_tokens: int,
    eos_ids: set[int],
    should_stop: Callable[[list[int]], bool] | None,
) -> bool:
    if token in eos_ids or len(generated) >= max_new_tokens:
        return True
    return should_stop is not None and should_stop(sequence)
