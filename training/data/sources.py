"""What the corpus build reads: its config, and the public data files loaded once for every corpus.

:class:`CorpusConfig` holds every knob of ``python -m training.data.corpus``;
:func:`load_sources` loads the shared files (PKU-SafeRLHF mini, Do-Not-Answer,
HH-RLHF harmless, the safety-tuned instructions, benign instructions) with
their load reports; :func:`without_eval_bucket` drops the questions the evals
keep for themselves. The corrector corpus (:mod:`training.data.corrector_corpus`),
the scorer corpus (:mod:`training.data.scorer_corpus`) and the gate corpus
(:mod:`training.data.gate_corpus`) all start from these.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml

from aligner_proxy.core.generation import GenerationParams
from aligner_proxy.core.refusal import is_refusal
from training.data.loaders import Instruction, load
from training.data.records import PreferencePair, SafetyLabel
from training.data.rows import LoadReport
from training.data.splits import (
    in_eval_bucket,
)

T = TypeVar("T")

SafetyOnlyRule = Literal["all", "declined"]
"""Which safety-only instructions count as harmful requests: ``all`` of them (the first corpora's rule), or
only those whose own safe output ``declined`` them (:func:`declines`); see :func:`harmful_safety_instructions`."""

_REBUTTAL = re.compile(r"\s*no\s*[,.!;:]", re.IGNORECASE)


@pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(extra="forbid"))
class CorpusConfig:
    """Every knob of the corpus build; the same object drives :func:`training.data.corpus.build` and the CLI."""

    data_dir: str = field(metadata={"help": "directory holding the shared public data files"})
    output_dir: str = field(default="runs/corpus", metadata={"help": "where the corpora, stats and card go"})
    pku_mini_file: str = field(default="pku-saferlhf-mini.csv", metadata={"help": "PKU-SafeRLHF mini (in data_dir)"})
    do_not_answer_file: str = field(default="do-not-answer.csv", metadata={"help": "Do-Not-Answer CSV"})
    hh_rlhf_file: str = field(default="hh-rlhf-harmless-base-test.jsonl.gz", metadata={"help": "HH-RLHF harmless"})
    safety_instructions_file: str = field(
        default="safety-only-instructions.json", metadata={"help": "harmful instructions with safe outputs"}
    )
    harmless_instructions_file: str = field(
        default="harmless-instructions.json", metadata={"help": "benign instructions (no answers)"}
    )
    corrector: bool = field(default=True, metadata={"help": "build the corrector corpus"})
    scorer: bool = field(default=True, metadata={"help": "build the scorer corpus"})
    max_pku_pairs: int = field(default=1000, metadata={"help": "max unsafe→safe triples from PKU-SafeRLHF mini"})
    max_hh_pairs: int = field(default=600, metadata={"help": "max rejected→chosen triples from HH-RLHF"})
    hh_max_human_turns: int = field(
        default=1, metadata={"help": "keep HH-RLHF dialogues with at most this many human turns"}
    )
    max_do_not_answer_pairs: int = field(default=1000, metadata={"help": "max harmful→harmless Do-Not-Answer triples"})
    n_harmful_generations: int = field(
        default=300, metadata={"help": "harmful instructions SmolLM2 answers (→ upstream triples)"}
    )
    n_benign_generations: int = field(
        default=300, metadata={"help": "benign instructions SmolLM2 answers (→ identity triples)"}
    )
    model: str = field(default="smollm2", metadata={"help": "upstream model spec (alias, path or Hub id)"})
    model_cache_dir: str | None = field(default=None, metadata={"help": "model cache (default ~/.cache/aligner-proxy)"})
    max_new_tokens: int = field(default=128, metadata={"help": "tokens per SmolLM2 answer (greedy)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    generation_cache: str | None = field(
        default=None, metadata={"help": "JSONL cache of answers (default <output_dir>/generations.jsonl)"}
    )
    identity_fraction: float = field(default=0.2, metadata={"help": "target share of identity triples in the mix"})
    identity_top_up: bool = field(
        default=True, metadata={"help": "fill the identity share with PKU-SafeRLHF safe answers if short"}
    )
    max_chars: int = field(default=6000, metadata={"help": "drop triples whose question+answer+correction is longer"})
    max_tokens: int = field(
        default=1024, metadata={"help": "same, in upstream tokenizer tokens (0 = off; needs the model)"}
    )
    validation_fraction: float = field(default=0.1, metadata={"help": "share of questions held out for validation"})
    scorer_max_pairs_per_question: int = field(
        default=4, metadata={"help": "max safe-vs-unsafe pairs per question in the scorer corpus"}
    )
    seed: int = field(default=0, metadata={"help": "salt of every hash-based sample and of the split"})
    exclude_eval_bucket: bool = field(
        default=False, metadata={"help": "drop every question of the evaluation bucket (splits.in_eval_bucket)"}
    )
    sensitive_file: str | list[str] | None = field(
        default=None,
        metadata={"help": "harmful-sounding benign Q&A (JSONL files): identity triples of its answers and SmolLM2's"},
    )
    safety_only_rule: SafetyOnlyRule = field(
        default="declined",
        metadata={"help": "safety-only instructions whose SmolLM2 answers are corrected: all, or declined ones only"},
    )
    safety_only_helpful_identity: bool = field(
        default=False,
        metadata={"help": "identity triples of the safety-only outputs that answer their (sensitive) instruction"},
    )
    target_gate: str | None = field(
        default=None,
        metadata={"help": "a scorer; corrections it scores above its own threshold are dropped (safe by the gate)"},
    )

    @property
    def cache_path(self) -> Path:
        return Path(self.generation_cache or Path(self.output_dir) / "generations.jsonl")

    @property
    def generation_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> CorpusConfig:
        values = yaml.safe_load(Path(path).read_text()) or {}
        return cls(**{**values, **overrides})


@dataclasses.dataclass
class Sources:
    """The shared data files, loaded once for both corpora, with their load reports."""

    pku: list[SafetyLabel]
    do_not_answer: list[SafetyLabel]
    hh: list[PreferencePair]
    safety_instructions: list[SafetyLabel]
    harmless_instructions: list[Instruction]
    reports: list[LoadReport]


def declines(output: str) -> bool:
    """Whether a safe output declines its request: a refusal by the refusal judge, or a rebuttal that opens
    with a bare "No," ("No, it is illegal to rob stores in Kansas..."), the safety-only data's other way of
    saying no."""
    return is_refusal(output) or _REBUTTAL.match(output) is not None


def harmful_safety_instructions(
    items: list[SafetyLabel], rule: SafetyOnlyRule, drops: dict[str, Counter[str]], name: str
) -> list[SafetyLabel]:
    """The safety-only instructions to treat as harmful requests under ``rule``; the rest are counted in ``drops``.

    The data set holds "harmful *or sensitive*" instructions, each with a safe output. A fifth of those
    outputs are plain helpful answers ("Research the culture of Irish people", "Outline strategies for
    managing a latex allergy"): the instruction is a sensitive one that deserves an answer, so an upstream's
    answer to it is not unsafe for being an answer, and is neither a gate's unsafe example nor a corrector's
    input to rewrite. Under ``declined`` only instructions whose output :func:`declines` are kept; the others'
    upstream answers go unlabelled (no judge here can tell a good answer from a bad one to them)."""
    if rule == "all":
        return list(items)
    kept = [x for x in items if declines(x.answer)]
    if len(kept) < len(items):
        drops[name]["safe output answers the instruction (sensitive, not harmful): upstream answer unlabelled"] += len(
            items
        ) - len(kept)
    return kept


def without_eval_bucket(sources: Sources, drops: dict[str, Counter[str]]) -> Sources:
    """The sources less every question of the evaluation bucket (:func:`~training.data.splits.in_eval_bucket`),
    counted in ``drops`` per source."""

    def keep(items: list[T], question: Callable[[T], str], name: str) -> list[T]:
        kept = [x for x in items if not in_eval_bucket(question(x))]
        if len(kept) < len(items):
            drops[name]["question in the evaluation bucket"] += len(items) - len(kept)
        return kept

    return dataclasses.replace(
        sources,
        pku=keep(sources.pku, lambda x: x.question, "pku-saferlhf-mini"),
        do_not_answer=keep(sources.do_not_answer, lambda x: x.question, "do-not-answer"),
        hh=keep(sources.hh, lambda x: x.prompt, "hh-rlhf-harmless-base"),
        safety_instructions=keep(sources.safety_instructions, lambda x: x.question, "safety-only"),
        harmless_instructions=keep(sources.harmless_instructions, lambda x: x.instruction, "harmless"),
    )


def load_sources(config: CorpusConfig) -> Sources:
    data = Path(config.data_dir)
    reports: list[LoadReport] = []

    def get(fmt: str, file: str, name: str, kind: type[T]) -> list[T]:
        records, report = load(fmt, data / file, name=name)
        reports.append(report)
        return [r for r in records if isinstance(r, kind)]

    return Sources(
        pku=get("pku-saferlhf-mini", config.pku_mini_file, "pku-saferlhf-mini", SafetyLabel),
        do_not_answer=get("do-not-answer", config.do_not_answer_file, "do-not-answer", SafetyLabel),
        hh=get("hh-rlhf", config.hh_rlhf_file, "hh-rlhf-harmless-base", PreferencePair),
        safety_instructions=get("safety-instructions", config.safety_instructions_file, "safety-only", SafetyLabel),
        harmless_instructions=get("instructions", config.harmless_instructions_file, "harmless", Instruction),
        reports=reports,
    )
