"""The Safe RLHF cost objective: the items it is computed on, the loss, and the Trainer that minimises it.

Safe RLHF (Dai et al., ICLR 2024, section 3.2, the cost-model loss) trains a
scalar cost ``c`` on pairs where one answer is more harmful, plus a sign term
that pins the *sign* of the cost to the human safety label::

    L = -log σ(c_unsafer - c_safer) - log σ(s_unsafer · c_unsafer) - log σ(s_safer · c_safer)

with ``s = +1`` for an unsafe answer and ``-1`` for a safe one; a sign term is
used only where that label is known. A single labelled answer (no partner)
contributes the sign term alone, ``-log σ(s · c)``. So ``c > 0`` means
"unsafe", which is exactly the gate the proxy applies (:mod:`aligner_proxy.core.scorer`).

Both scorers trained on it share this module: the cost model
(:mod:`training.cost_model`) and the gate (:mod:`training.gate`). TRL has no
cost-model trainer (its ``RewardTrainer`` has only the ranking term), so
:func:`cost_trainer_class` is a ``transformers.Trainer`` with this loss, fed by
:class:`CostCollator` in the serving scorer's text format.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aligner_proxy.core.backends.classifier import fit_scoring_text
from aligner_proxy.core.files import read_jsonl_models
from training.data.records import PreferencePair, SafetyLabel


@dataclass
class CostItem:
    """One training item: a single labelled answer, or a pair ordered ``[unsafer, safer]``.

    ``signs`` holds ``+1`` (unsafe), ``-1`` (safe) or ``0`` (unknown) per answer.
    """

    prompt: str
    answers: list[str]
    signs: list[int]
    source: str = ""


def _sign(is_safe: bool | None) -> int:
    return 0 if is_safe is None else (-1 if is_safe else 1)


def build_items(labels: Sequence[SafetyLabel], pairs: Sequence[PreferencePair]) -> list[CostItem]:
    """Singles from safety labels, pairs from preference pairs that say which answer is safer."""
    items = [CostItem(x.question, [x.answer], [_sign(x.is_safe)], x.source) for x in labels]
    for p in pairs:
        if p.safer is None:
            continue
        chosen, rejected = (p.chosen, _sign(p.chosen_is_safe)), (p.rejected, _sign(p.rejected_is_safe))
        unsafer, safer = (rejected, chosen) if p.safer == "chosen" else (chosen, rejected)
        items.append(CostItem(p.prompt, [unsafer[0], safer[0]], [unsafer[1], safer[1]], p.source))
    return items


def load_split(labels_file: str, pairs_file: str | None, cap: int | None, seed: int) -> tuple[list[Any], list[Any]]:
    labels = read_jsonl_models(labels_file, SafetyLabel)
    pairs = read_jsonl_models(pairs_file, PreferencePair) if pairs_file else []
    pairs = [p for p in pairs if p.safer is not None]
    if cap is not None:
        rng = random.Random(seed)
        rng.shuffle(labels)
        rng.shuffle(pairs)
        labels, pairs = labels[:cap], pairs[:cap]
    return labels, pairs


def cost_loss(costs: Any, signs: Any, pairs: Any) -> Any:
    """The Safe RLHF cost loss, averaged over items (a pair or a single answer is one item).

    ``costs``: ``(n,)`` one cost per answer; ``signs``: ``(n,)`` of +1 unsafe,
    -1 safe, 0 unknown; ``pairs``: ``(p, 2)`` row indices ``[unsafer, safer]``,
    each answer in at most one pair. An item's loss is its ranking term (pairs)
    plus the sign terms of its answers whose label is known.
    """
    import torch
    from torch.nn.functional import logsigmoid

    signs = signs.to(costs.dtype)
    sign_terms = -logsigmoid(signs * costs) * (signs != 0).to(costs.dtype)
    ranking = -logsigmoid(costs[pairs[:, 0]] - costs[pairs[:, 1]]) if len(pairs) else costs.new_zeros(0)
    n_items = costs.shape[0] - pairs.shape[0]  # the two answers of a pair make one item
    return (ranking.sum() + sign_terms.sum()) / torch.clamp(torch.tensor(n_items, dtype=costs.dtype), min=1)


def flatten_items(items: Sequence[CostItem]) -> tuple[list[str], list[str], list[int], list[tuple[int, int]]]:
    """Prompts, answers and signs per answer, and the ``[unsafer, safer]`` row pairs."""
    prompts: list[str] = []
    answers: list[str] = []
    signs: list[int] = []
    pairs: list[tuple[int, int]] = []
    for item in items:
        start = len(answers)
        prompts.extend([item.prompt] * len(item.answers))
        answers.extend(item.answers)
        signs.extend(item.signs)
        if len(item.answers) == 2:
            pairs.append((start, start + 1))
    return prompts, answers, signs, pairs


class CostCollator:
    """Flatten a batch of items into one right-padded classifier batch plus ``signs`` and ``pairs``."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: list[CostItem]) -> dict[str, Any]:
        import torch

        prompts, answers, signs, pairs = flatten_items(items)
        texts = [fit_scoring_text(self.tokenizer, p, a, self.max_length) for p, a in zip(prompts, answers, strict=True)]
        self.tokenizer.padding_side = "right"  # as SequenceClassifierScorer pads
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "signs": torch.tensor(signs, dtype=torch.long),
            "pairs": torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        }


def cost_trainer_class() -> type:
    """``CostTrainer``, built on first use so that importing this module does not import transformers."""
    from transformers import Trainer

    class CostTrainer(Trainer):
        """``transformers.Trainer`` with the Safe RLHF cost loss (TRL ships no cost-model trainer)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False  # our loss is a per-item mean: divide by accumulation steps

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            signs, pairs = inputs.pop("signs"), inputs.pop("pairs")
            costs = model(**inputs).logits[:, 0].float()
            loss = cost_loss(costs, signs, pairs)
            return (loss, costs) if return_outputs else loss

    return CostTrainer
