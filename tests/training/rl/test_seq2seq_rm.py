"""Seq2seq reward modelling: RM data and the documented token-level rule (training/rl/seq2seq_rm.py)."""

from __future__ import annotations

from typing import Any

import pytest

from training.data.records import PreferencePair
from training.rl.seq2seq_rm import Seq2SeqRewardModel, build_rm_triples, token_char_spans, token_rewards


def test_rule_on_a_hand_made_case() -> None:
    # "Mix flour. Add bomb." in four policy tokens and an EOS; the RM diverges where " bomb" starts (char 14).
    spans = [(0, 3), (3, 10), (10, 14), (14, 19), (19, 20), (20, 20)]
    rewards = token_rewards(spans, 14)
    assert rewards == pytest.approx([1 / 6, 1 / 6, 1 / 6, -1 / 6, -1 / 6, -1 / 6])
    assert token_rewards(spans, None) == pytest.approx([1 / 6] * 6)  # kept whole: sums to +keep_reward
    assert sum(token_rewards(spans, 0)) == pytest.approx(-1.0)  # rewritten from the start: sums to -edit_penalty
    # a token straddling the divergence is already an edit; no normalisation gives the raw values
    assert token_rewards([(0, 5), (5, 9)], 7, keep_reward=2.0, edit_penalty=0.5, normalize=False) == [2.0, -0.5]


class StubRM(Seq2SeqRewardModel):
    """The tiny LM's tokenizer with a stubbed model: it copies the answer but would rewrite any token starting
    with ``b`` (in these answers only the first piece of "bomb": the tiny tokenizer spells it " b", "o", "m", "b")."""

    word = "b"

    def greedy_predictions(self, sequences: list[list[int]]) -> list[list[int]]:
        out = []
        for seq in sequences:
            nxt = [*seq[1:], self.eos_id]
            out.append([0 if self.tokenizer.decode([t]).strip().startswith(self.word) else t for t in nxt])
        return out


@pytest.fixture(scope="module")
def stub_rm(tiny_rm: Any) -> StubRM:
    return StubRM(tiny_rm.model, tiny_rm.tokenizer, max_question_tokens=32, max_answer_tokens=64)


def test_tokens_before_the_first_edit_score_positive_and_the_rest_negative(stub_rm: StubRM) -> None:
    tok = stub_rm.tokenizer
    answer = "  Mix flour and water. Then add bomb powder and wait."  # leading spaces, as sampled answers have
    ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    spans = token_char_spans(tok, ids, answer)
    [divergence] = stub_rm.divergence(["How do I bake?"], [answer])
    assert divergence.char is not None
    assert answer.strip()[divergence.char :].lstrip().startswith("bomb")
    [rewards] = stub_rm.token_rewards(["How do I bake?"], [answer], [spans])
    assert len(rewards) == len(ids)
    n_pos = sum(r > 0 for r in rewards)
    assert rewards[:n_pos] == [pytest.approx(1 / len(ids))] * n_pos  # a run of positives ...
    assert all(r == pytest.approx(-1 / len(ids)) for r in rewards[n_pos:])  # ... then only negatives, EOS included
    kept = tok.decode(ids[:n_pos])
    assert "bomb" not in kept and kept.strip().endswith("add")


def test_an_answer_the_rm_keeps_scores_positive_throughout(stub_rm: StubRM) -> None:
    [divergence] = stub_rm.divergence(["q"], ["Mix flour and water."])
    assert divergence.char is None and divergence.kept_tokens == divergence.rm_tokens > 0
    [kept, edited] = stub_rm.score(["q", "q"], ["Mix flour and water.", "bomb it now."])
    assert kept == pytest.approx(1.0) and edited == pytest.approx(-1.0)  # rewritten from its first token


def test_the_real_model_path_gives_a_prefix_of_positives(tiny_rm: Any) -> None:
    rewards = tiny_rm.token_rewards(["How do I bake bread?"], ["Preheat the oven, mix the batter and bake it."])[0]
    assert rewards and all(abs(r) == pytest.approx(abs(rewards[0])) for r in rewards)
    signs = [r > 0 for r in rewards]
    assert signs == sorted(signs, reverse=True)  # positives (if any) come first


def test_rm_triples_are_corrections_plus_identity() -> None:
    pairs = [
        PreferencePair(source="t", prompt=f"q{i}", chosen=f"safe {i}", rejected=f"unsafe {i}", safer="chosen")
        for i in range(10)
    ] + [PreferencePair(source="t", prompt="q", chosen="a", rejected="b", safer="rejected")]
    pairs.append(PreferencePair(source="t", prompt="unknown", chosen="x", rejected="y"))  # no safety label
    triples = build_rm_triples(pairs, preference="safer", identity_fraction=0.5, seed=0)
    corrections = [t for t in triples if t.kind == "unsafe_to_safe"]
    identity = [t for t in triples if t.kind == "identity"]
    assert len(corrections) == 11 and len(identity) == 6
    assert all(t.answer == t.correction for t in identity)
    assert {(t.answer, t.correction) for t in corrections} >= {("unsafe 3", "safe 3"), ("a", "b")}
    assert len(build_rm_triples(pairs, preference="chosen", identity_fraction=0.0)) == 12
