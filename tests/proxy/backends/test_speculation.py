"""Copy speculation decodes exactly as plain greedy decoding does, in fewer forward passes where the text repeats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from aligner_proxy.core.backends.speculation import find_draft, speculative_greedy


def test_a_draft_needs_a_match_of_at_least_min_ngram_tokens() -> None:
    #          0  1  2  3  4  5  6  7  8  9
    tokens = [5, 6, 7, 8, 9, 1, 6, 7]  # the tail (6, 7) repeats, but only two tokens long
    assert find_draft(tokens, max_draft=5) == []
    assert find_draft(tokens, max_draft=5, min_ngram=2) == [8, 9, 1, 6, 7]
    assert find_draft([*tokens[:5], 1, 5, 6, 7], max_draft=3) == [8, 9, 1]  # (5, 6, 7) repeats: a draft


def test_the_longest_matching_ngram_wins_at_its_first_occurrence_and_the_draft_is_capped() -> None:
    tokens = [1, 2, 3, 40, 9, 2, 3, 50, 1, 2, 3, 60, 1, 2, 3]
    # (1, 2, 3) first occurs at 0 and is followed by 40; (9, 2, 3) would say 50, but it is not the tail.
    assert find_draft(tokens, max_draft=2) == [40, 9]
    assert find_draft([7, 1, 2, 3, 4, 8, 7, 1, 2, 3, 4], max_draft=9, max_ngram=4) == [8, 7, 1, 2, 3, 4]
    assert find_draft(tokens, max_draft=0) == []
    assert find_draft([1, 2, 3], max_draft=4) == []  # the tail's own occurrence is no match


@pytest.fixture(scope="module")
def tiny_lm(tiny_lm_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_lm_dir)


TEXTS = [
    "How do I bake bread? Mix flour, water, salt and yeast, knead, let it rise, shape it and bake it hot.",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick",
    "I cannot help with that.",
]


class Counting(torch.nn.Module):
    """The model, counting its forward passes."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.model(**kwargs)

    def get_base_model(self) -> Any:  # as a peft model does: the wrapped model names the cache argument
        return self.model


@pytest.mark.parametrize("max_new_tokens", [1, 7, 40])
def test_speculative_greedy_equals_generate_and_saves_passes_on_repeating_text(
    tiny_lm: Any, max_new_tokens: int
) -> None:
    model, tokenizer = tiny_lm
    eos = {int(tokenizer.eos_token_id)}
    saved = 0
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            plain = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(eos),
                pad_token_id=int(tokenizer.eos_token_id),
            )[0, len(ids) :].tolist()
            counting = Counting(model)
            fast = speculative_greedy(counting, ids, max_new_tokens=max_new_tokens, eos_ids=eos, draft_tokens=8)
        assert fast == plain, text
        saved += len(fast) - counting.calls
    if max_new_tokens == 40:
        assert saved > 0  # the random model loops, and its loops repeat the text: drafts were accepted


def test_speculative_greedy_stops_where_it_is_told_to(tiny_lm: Any) -> None:
    model, tokenizer = tiny_lm
    ids = tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]
    seen: list[int] = []

    def stop_after_five(sequence: list[int]) -> bool:
        seen.append(len(sequence))
        return len(sequence) - len(ids) >= 5

    with torch.inference_mode():
        full = speculative_greedy(model, ids, max_new_tokens=30, eos_ids=set(), draft_tokens=8)
        cut = speculative_greedy(
            model, ids, max_new_tokens=30, eos_ids=set(), draft_tokens=8, should_stop=stop_after_five
        )
    assert cut == full[:5] and seen == [len(ids) + n for n in range(1, 6)]  # asked after every token
