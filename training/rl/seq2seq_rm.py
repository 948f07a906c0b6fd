"""Sequence-to-sequence reward modelling: a corrector-style RM and the token-level rewards it gives.

Seq2seq reward modelling (Zhou, Ji, Dai, Yang, "Sequence to Sequence Reward
Modeling: Improving RLHF by Language Feedback", 2024) replaces the scalar
Bradley–Terry head by a language model that *rewrites* a rejected answer into
the chosen one, and reads token-level feedback off what it would change. That
is exactly an Aligner corrector trained on preference pairs, so the RM here
*is* a corrector: :func:`build_rm_triples` turns each
:class:`~training.data.records.PreferencePair` into a ``(prompt, rejected) →
chosen`` correction plus ``identity_fraction`` identity triples ``(prompt,
chosen) → chosen`` (so the RM learns to keep good text), and
:func:`train_seq2seq_rm` trains them with the corrector's own SFT recipe
(:func:`training.sft.train_corrector`), same prompt, same loss masking.

**Token-level rule** (:meth:`Seq2SeqRewardModel.divergence`,
:func:`token_rewards`). For a policy answer ``a`` to question ``q``, the RM
reads the Aligner prompt of ``(q, a)`` (:meth:`Corrector.build_prompt`, the one
renderer) and is teacher-forced on the target ``" " + a.strip()`` followed by
EOS, exactly the layout it was trained on. Let ``y_1..y_n`` be the target
tokens, ``y_{n+1} = EOS``, and ``ŷ_t`` the RM's greedy (argmax) prediction
given the prompt and ``y_<t``. The first divergence is
``k = min{t ≤ n : ŷ_t ≠ y_t}``, or ``k = n + 1`` when ``ŷ_t = y_t`` for every
``t ≤ n`` (the RM would keep the whole answer; whether it would stop there or
add text does not change the rule). Then, with ``c`` the character where RM
token ``y_k`` starts in ``a.strip()``:

- a policy token whose text ends at or before ``c`` (all of it lies in the
  part the RM keeps) gets ``+keep_reward``;
- every later policy token (the first one that overlaps the divergence and all
  after it, EOS included) gets ``-edit_penalty``;
- with ``normalize`` (default) both are divided by the number of policy
  tokens, so a fully kept answer sums to ``+keep_reward`` and a fully rewritten
  one to ``-edit_penalty`` whatever its length.

Working in characters lets the policy and the RM use different tokenizers.
Tokens beyond ``max_answer_tokens`` of the RM's window count as kept when no
divergence was seen inside it. As a sequence-level scorer
(:meth:`Seq2SeqRewardModel.score`) the RM returns the sum of the token rewards
(higher is better: a *reward*, not a cost).

CLI: ``python -m training.rl.seq2seq_rm --config training/configs/rl_seq2seq_rm.yaml``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aligner_proxy.core.files import read_jsonl_models, write_jsonl
from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from training.data.records import CorrectionTriple, PreferencePair

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- training


@dataclass
class Seq2SeqRMConfig:
    """Data and SFT knobs of a seq2seq RM run; YAML keys and CLI flags map onto these fields."""

    pairs_file: str = field(
        default="runs/corpus/scorer_pairs_train.jsonl", metadata={"help": "PreferencePair JSONL (chosen, rejected)."}
    )
    preference: str = field(default="safer", metadata={"help": "'chosen' (people's pick) or 'safer' (when known)."})
    identity_fraction: float = field(default=0.3, metadata={"help": "Identity triples per correction triple."})
    max_pairs: int | None = field(default=None, metadata={"help": "Cap on pairs (after shuffle)."})
    output_dir: str = field(default="runs/seq2seq_rm", metadata={"help": "RM adapter, triples and card."})
    model: str = field(default="smollm2", metadata={"help": "Base causal LM spec."})
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "Model cache."})
    max_steps: int = field(default=200, metadata={"help": "Optimiser steps."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Rows per step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (LoRA)."})
    max_length: int = field(default=384, metadata={"help": "Tokens per row."})
    max_question_tokens: int = field(default=128, metadata={"help": "Question budget in the prompt."})
    max_answer_tokens: int = field(default=160, metadata={"help": "Answer budget in the prompt."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling and init."})


def build_rm_triples(
    pairs: Sequence[PreferencePair], *, preference: str = "safer", identity_fraction: float = 0.3, seed: int = 0
) -> list[CorrectionTriple]:
    """``(prompt, worse) → better`` corrections and ``(prompt, better) → better`` identity triples.

    ``preference="safer"`` uses only pairs that say which answer is safer and
    orients them by it; ``"chosen"`` uses every pair's chosen answer.
    """
    rng = random.Random(seed)
    oriented: list[tuple[str, str, str]] = []
    for p in pairs:
        if preference == "chosen":
            oriented.append((p.prompt, p.chosen, p.rejected))
        elif p.safer is not None:
            better, worse = (p.chosen, p.rejected) if p.safer == "chosen" else (p.rejected, p.chosen)
            oriented.append((p.prompt, better, worse))
    triples = [
        CorrectionTriple(source=f"seq2seq-rm:{preference}", question=q, answer=worse, correction=better)
        for q, better, worse in oriented
        if better.strip() != worse.strip()
    ]
    n_identity = round(identity_fraction * len(triples))
    for q, better, _ in rng.sample(oriented, min(n_identity, len(oriented))):
        triples.append(
            CorrectionTriple(
                source=f"seq2seq-rm:{preference}", question=q, answer=better, correction=better, kind="identity"
            )
        )
    rng.shuffle(triples)
    return triples


def train_seq2seq_rm(config: Seq2SeqRMConfig) -> Path:
    """Write the RM triples to ``output_dir/triples.jsonl`` and train them with the corrector recipe."""
    from training.sft import CorrectorSFTConfig, train_corrector

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_jsonl_models(config.pairs_file, PreferencePair)
    random.Random(config.seed).shuffle(pairs)
    triples = build_rm_triples(
        pairs[: config.max_pairs],
        preference=config.preference,
        identity_fraction=config.identity_fraction,
        seed=config.seed,
    )
    triples_file = out / "triples.jsonl"
    write_jsonl(triples_file, triples)
    logger.info("seq2seq RM: %d triples (%d identity)", len(triples), sum(t.kind == "identity" for t in triples))
    sft = CorrectorSFTConfig(
        model=config.model,
        train_file=str(triples_file),
        validation_file=None,
        output_dir=str(out),
        cache_dir=config.cache_dir,
        max_length=config.max_length,
        max_question_tokens=config.max_question_tokens,
        max_answer_tokens=config.max_answer_tokens,
        per_device_train_batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        main_kinds=["unsafe_to_safe", "identity"],
        seed=config.seed,
    )
    path = train_corrector(sft)
    (out / "seq2seq_rm.json").write_text(json.dumps({"base_model": config.model, "kind": "seq2seq-rm"}) + "\n")
    return path


# --------------------------------------------------------------------------- token-level rewards


@dataclass
class Divergence:
    """Where the RM stops agreeing with an answer: ``char`` in ``answer.strip()``, or ``None`` if it keeps it all."""

    char: int | None
    kept_tokens: int
    rm_tokens: int


def token_rewards(
    spans: Sequence[tuple[int, int]],
    divergence: int | None,
    *,
    keep_reward: float = 1.0,
    edit_penalty: float = 1.0,
    normalize: bool = True,
) -> list[float]:
    """Per-token rewards for a policy answer from the RM's first divergence (the module docstring's rule).

    ``spans``: each policy token's ``(start, end)`` characters in the stripped
    answer (an EOS token is ``(len, len)``); ``divergence``: the character
    where the RM first diverges, ``None`` when it keeps the whole answer.
    """
    n = max(len(spans), 1)
    keep, edit = (keep_reward / n, -edit_penalty / n) if normalize else (keep_reward, -edit_penalty)
    return [keep if divergence is None or end <= divergence else edit for _, end in spans]


def token_char_spans(tokenizer: Any, ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Each token's ``(start, end)`` in ``text.strip()``, by incremental decoding of ``ids`` (which decode to ``text``).

    Special tokens (EOS) decode to nothing and get an empty span at the
    current end; spans are clamped into the stripped text.
    """
    lead = len(text) - len(text.lstrip())
    stripped = len(text.strip())
    spans = []
    previous = 0
    for i in range(len(ids)):
        current = len(tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True))
        start = min(max(previous - lead, 0), stripped)
        end = min(max(current - lead, 0), stripped)
        spans.append((start, end))
        previous = current
    return spans


class Seq2SeqRewardModel:
    """A trained seq2seq RM (a corrector) that scores answers per token by teacher-forced agreement."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str = "seq2seq-rm",
        keep_reward: float = 1.0,
        edit_penalty: float = 1.0,
        normalize: bool = True,
        max_question_tokens: int = 128,
        max_answer_tokens: int = 160,
        batch_size: int = 8,
    ) -> None:
        from aligner_proxy.core.backends.tokenizer import HFTokenizer
        from aligner_proxy.core.corrector import CorrectionPrompter

        self.model = model
        self.tokenizer = tokenizer
        self._model_id = model_id
        self.keep_reward = keep_reward
        self.edit_penalty = edit_penalty
        self.normalize = normalize
        self.max_answer_tokens = max_answer_tokens
        self.batch_size = batch_size
        self.prompter = CorrectionPrompter(
            HFTokenizer(tokenizer),
            max_question_tokens=max_question_tokens,
            max_answer_tokens=max_answer_tokens,
        )
        eos = tokenizer.eos_token_id
        self.eos_id: int = int(eos if eos is not None else 0)

    @classmethod
    def load(cls, path: str, *, cache_dir: Path = DEFAULT_CACHE_DIR, **kw: Any) -> Seq2SeqRewardModel:
        """Load a merged model directory, or a LoRA adapter directory on its base (``adapter_config.json``)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from aligner_proxy.core.models import resolve_model

        directory = Path(path)
        if (directory / "adapter_config.json").is_file():
            from peft import PeftModel

            base_spec = json.loads((directory / "adapter_config.json").read_text())["base_model_name_or_path"]
            base = AutoModelForCausalLM.from_pretrained(
                resolve_model(base_spec, cache_dir=cache_dir), dtype=torch.float32
            )
            model = PeftModel.from_pretrained(base, str(directory)).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(resolve_model(path, cache_dir=cache_dir), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(
            directory if (directory / "tokenizer_config.json").is_file() else path
        )
        return cls(model.eval(), tokenizer, model_id=f"seq2seq:{path}", **kw)

    @property
    def model_id(self) -> str:
        return self._model_id

    def _encode(self, prompt: str, answer: str) -> tuple[list[int], int, list[tuple[int, int]]]:
        """Token ids of prompt + ``" " + answer`` (+ EOS), where the target starts, and target spans in the answer."""
        from aligner_proxy.core.corrector import CorrectionInput

        rendered = self.prompter.build_prompt(CorrectionInput(prompt, answer))
        target = " " + answer.strip()
        enc = self.tokenizer(rendered + target, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        start = next((i for i, (_, end) in enumerate(offsets) if end > len(rendered)), len(ids))
        shift = len(rendered) + 1  # the target's leading space
        spans = [(max(s - shift, 0), max(e - shift, 0)) for s, e in offsets[start:]][: self.max_answer_tokens]
        ids = ids[: start + len(spans)]
        return [*ids, self.eos_id], start, spans

    def greedy_predictions(self, sequences: list[list[int]]) -> list[list[int]]:
        """The RM's argmax next-token prediction at every position of each (teacher-forced) sequence."""
        import torch

        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits
        return [logits[row, : len(seq)].argmax(-1).tolist() for row, seq in enumerate(sequences)]

    def divergence(self, prompts: list[str], completions: list[str]) -> list[Divergence]:
        """Where the RM first departs from each answer (see the module docstring for the rule)."""
        out: list[Divergence] = []
        for i in range(0, len(prompts), self.batch_size):
            encoded = [
                self._encode(p, c)
                for p, c in zip(prompts[i : i + self.batch_size], completions[i : i + self.batch_size], strict=True)
            ]
            predictions = self.greedy_predictions([ids for ids, _, _ in encoded])
            for (ids, start, spans), pred in zip(encoded, predictions, strict=True):
                n = len(spans)
                # pred[j] predicts ids[j + 1]; the target y_1..y_n, EOS sits at ids[start .. start + n].
                k = next((t for t in range(n) if pred[start - 1 + t] != ids[start + t]), n)
                char = spans[k][0] if k < n else None
                out.append(Divergence(char=char, kept_tokens=k, rm_tokens=n))
        return out

    def token_rewards(
        self, prompts: list[str], completions: list[str], spans: list[list[tuple[int, int]]] | None = None
    ) -> list[list[float]]:
        """Per-token rewards for each answer.

        ``spans``: the policy tokens' characters in each stripped answer (default: the RM's own tokens).
        """
        divs = self.divergence(prompts, completions)
        if spans is None:
            spans = [self._encode(p, c)[2] for p, c in zip(prompts, completions, strict=True)]
        return [
            token_rewards(
                s, d.char, keep_reward=self.keep_reward, edit_penalty=self.edit_penalty, normalize=self.normalize
            )
            for s, d in zip(spans, divs, strict=True)
        ]

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        """Sequence-level reward: the sum of the token rewards over the RM's tokens (higher is better)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [sum(r) for r in self.token_rewards(prompts, completions)]


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_seq2seq_rm(parse_config(Seq2SeqRMConfig, argv))


if __name__ == "__main__":
    main()
