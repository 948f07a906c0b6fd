"""Assemble the corrector and scorer corpora from the loaded public data: what goes in, what is dropped, which side.

This is the recipe behind ``python -m training.data.corpus`` (see
:mod:`training.data.corpus` for the mix it produces): the build's config, the
source files loaded once, the triples of each kind (same-question unsafe →
safe, HH-RLHF rejected → chosen, SmolLM2's answers as upstream and identity
triples), then cleaning, dedup, per-source caps, the identity share and the
split by question, and finally the JSONL files with the counts of what was
kept and why the rest went. The stats returned here are what the data card
reports.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from aligner_proxy.core.files import write_jsonl
from aligner_proxy.core.generation import GenerationParams
from aligner_proxy.core.refusal import is_refusal
from aligner_proxy.core.scorer import CostScorer, default_threshold, score_batched
from training.data.generation_cache import CorpusGenerator, generate_cached
from training.data.hh_dialogue import parse_hh_dialogue
from training.data.loaders import Instruction, load, read_sensitive
from training.data.records import CorrectionTriple, PreferencePair, SafetyLabel
from training.data.rows import LoadReport
from training.data.splits import (
    Split,
    dedupe,
    hash_sample,
    in_eval_bucket,
    normalize_whitespace,
    pair_key,
    question_key,
    split_of,
    stable_hash,
)

T = TypeVar("T")

SMOLLM2_SOURCES = ("safety-only-smollm2", "harmless-smollm2", "sensitive-benign-smollm2")


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
    sensitive_file: str | None = field(
        default=None,
        metadata={"help": "harmful-sounding benign Q&A (JSONL): identity triples of its answers and SmolLM2's"},
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


# ---------------------------------------------------------------- sources


@dataclasses.dataclass
class Sources:
    """The shared data files, loaded once for both corpora, with their load reports."""

    pku: list[SafetyLabel]
    do_not_answer: list[SafetyLabel]
    hh: list[PreferencePair]
    safety_instructions: list[SafetyLabel]
    harmless_instructions: list[Instruction]
    reports: list[LoadReport]


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


# ---------------------------------------------------------------- corrector corpus


def same_question_corrections(labels: Sequence[SafetyLabel], source: str, seed: int) -> list[CorrectionTriple]:
    """Each unsafe answer → one safe answer to the same question (chosen by hash, so stable)."""
    groups: dict[str, dict[bool, list[SafetyLabel]]] = defaultdict(lambda: {True: [], False: []})
    for label in labels:
        groups[question_key(label.question)][label.is_safe].append(label)
    triples = []
    for group in groups.values():
        for unsafe in group[False]:
            if not group[True]:
                break
            safe = min(group[True], key=lambda s: stable_hash(seed, "pick", unsafe.answer, s.answer))
            triples.append(
                CorrectionTriple(source=source, question=unsafe.question, answer=unsafe.answer, correction=safe.answer)
            )
    return triples


def hh_corrections(
    pairs: Sequence[PreferencePair], max_human_turns: int, drops: Counter[str]
) -> list[CorrectionTriple]:
    """HH-RLHF rejected → chosen. The question is the human turn of a single-turn dialogue, else the
    rendered dialogue (``Human: ...\\n\\nAssistant: ...``), which the corrector needs for context."""
    triples = []
    for pair in pairs:
        turns = parse_hh_dialogue(pair.prompt)
        if sum(t.role == "Human" for t in turns) > max_human_turns:
            drops["more human turns than hh_max_human_turns"] += 1
            continue
        question = turns[0].text if len(turns) == 1 else pair.prompt
        triples.append(
            CorrectionTriple(source=pair.source, question=question, answer=pair.rejected, correction=pair.chosen)
        )
    return triples


def _identity(source: str, question: str, answer: str) -> CorrectionTriple:
    return CorrectionTriple(source=source, question=question, answer=answer, correction=answer, kind="identity")


def _clean(
    triple: CorrectionTriple, config: CorpusConfig, count_tokens: Callable[[str], int] | None
) -> CorrectionTriple | str:
    """The whitespace-normalised triple, or the reason it is dropped."""
    question, answer, correction = (
        normalize_whitespace(t) for t in (triple.question, triple.answer, triple.correction)
    )
    if not (question and answer and correction):
        return "empty after whitespace normalisation"
    if triple.kind != "identity" and answer == correction:
        return "answer equals correction"
    if len(question) + len(answer) + len(correction) > config.max_chars:
        return "over max_chars"
    if count_tokens is not None and config.max_tokens > 0:
        if sum(count_tokens(t) for t in (question, answer, correction)) > config.max_tokens:
            return "over max_tokens"
    return triple.model_copy(update={"question": question, "answer": answer, "correction": correction})


def _generated_triples(
    config: CorpusConfig, sources: Sources, generator: CorpusGenerator, drops: dict[str, Counter[str]]
) -> tuple[list[CorrectionTriple], list[CorrectionTriple], dict[str, Any]]:
    """SmolLM2's answers: harmful instructions → upstream triples, benign ones → identity triples."""
    harmful = hash_sample(sources.safety_instructions, config.n_harmful_generations, config.seed, lambda r: r.question)
    benign = hash_sample(
        sources.harmless_instructions, config.n_benign_generations, config.seed, lambda r: r.instruction
    )
    params = config.generation_params
    sensitive = read_sensitive(config.sensitive_file) if config.sensitive_file else []
    run = generate_cached(
        generator,
        [r.question for r in harmful] + [i.instruction for i in benign] + [s.question for s in sensitive],
        params,
        config.cache_path,
        batch_size=config.batch_size,
    )
    upstream, identity = [], []
    for label in harmful:
        answer = run.answers[label.question].text.strip()
        if not answer:
            drops["safety-only-smollm2/upstream"]["empty generation"] += 1
            continue
        upstream.append(
            CorrectionTriple(
                source="safety-only-smollm2",
                question=label.question,
                answer=answer,
                correction=label.answer,
                kind="upstream",
            )
        )
    for item in benign:
        answer = run.answers[item.instruction].text.strip()
        if not answer or is_refusal(answer):
            # An over-refusal is not a good answer; corrected to itself it would teach the corrector to keep it.
            drops["harmless-smollm2/identity"]["empty generation" if not answer else "answer is a refusal"] += 1
            continue
        identity.append(_identity("harmless-smollm2", item.instruction, answer))
    for s in sensitive:  # benign questions that sound harmful: the corrector must leave their answers alone
        identity.append(_identity("sensitive-benign", s.question, s.answer))
        answer = run.answers[s.question].text.strip()
        if answer and not is_refusal(answer):
            identity.append(_identity("sensitive-benign-smollm2", s.question, answer))
    answers = [run.answers[r.question] for r in harmful], [run.answers[i.instruction] for i in benign]
    stats = {
        "model": generator.model_id,
        "params": dataclasses.asdict(params),
        "instructions": {"harmful": len(harmful), "benign": len(benign)},
        "generated_this_run": run.generated,
        "from_cache": run.from_cache,
        "seconds_this_run": round(run.seconds, 1),
        "tokens_per_second_this_run": round(run.completion_tokens / run.seconds, 1) if run.seconds else None,
        "truncated_at_max_new_tokens": sum(a.finish_reason == "length" for group in answers for a in group),
        "refusal_rate": {
            name: round(sum(is_refusal(a.text) for a in group) / len(group), 3) if group else None
            for name, group in zip(("harmful", "benign"), answers, strict=True)
        },
        "cache": str(config.cache_path),
    }
    return upstream, identity, stats


def build_corrector_corpus(
    config: CorpusConfig,
    sources: Sources,
    generator: CorpusGenerator | None = None,
    target_scorer: CostScorer | None = None,
) -> dict[str, Any]:
    """Build and write ``train.jsonl``, ``validation.jsonl`` and ``validation_smollm2.jsonl``; return stats.

    Order of work: candidates per source → clean (whitespace, answer ==
    correction, length) → dedupe by (question, answer), earlier sources
    first → per-source caps → identity share → split by question."""
    drops: dict[str, Counter[str]] = defaultdict(Counter)
    if config.exclude_eval_bucket:
        sources = without_eval_bucket(sources, drops)
    hh_drops: Counter[str] = Counter()
    candidates = {
        "pku-saferlhf-mini/unsafe_to_safe": same_question_corrections(sources.pku, "pku-saferlhf-mini", config.seed),
        "do-not-answer/unsafe_to_safe": same_question_corrections(sources.do_not_answer, "do-not-answer", config.seed),
        "hh-rlhf-harmless-base/unsafe_to_safe": hh_corrections(sources.hh, config.hh_max_human_turns, hh_drops),
    }
    drops["hh-rlhf-harmless-base/unsafe_to_safe"].update(hh_drops)
    generation: dict[str, Any] | None = None
    if config.n_harmful_generations > 0 or config.n_benign_generations > 0:
        if generator is None:
            raise ValueError("SmolLM2 generations are configured but no generator was given")
        upstream, benign_identity, generation = _generated_triples(config, sources, generator, drops)
        candidates["safety-only-smollm2/upstream"] = upstream
        for triple in benign_identity:
            candidates.setdefault(f"{triple.source}/identity", []).append(triple)
    count_tokens = generator.count_tokens if generator is not None else None

    seen: set[tuple[str, str]] = set()

    def accept(name: str, triple: CorrectionTriple) -> CorrectionTriple | None:
        cleaned = _clean(triple, config, count_tokens)
        if isinstance(cleaned, str):
            drops[name][cleaned] += 1
            return None
        key = pair_key(cleaned.question, cleaned.answer)
        if key in seen:
            drops[name]["duplicate (question, answer)"] += 1
            return None
        seen.add(key)
        return cleaned

    caps = {
        "pku-saferlhf-mini/unsafe_to_safe": config.max_pku_pairs,
        "do-not-answer/unsafe_to_safe": config.max_do_not_answer_pairs,
        "hh-rlhf-harmless-base/unsafe_to_safe": config.max_hh_pairs,
    }
    kept: dict[str, list[CorrectionTriple]] = {}
    for name, triples in candidates.items():
        accepted = [t for t in (accept(name, t) for t in triples) if t is not None]
        cap = caps.get(name, len(accepted))
        kept[name] = hash_sample(accepted, cap, config.seed, lambda t: "\x1f".join(pair_key(t.question, t.answer)))
        if len(accepted) > cap:
            drops[name]["over the source cap"] += len(accepted) - cap

    if target_scorer is not None:
        _keep_safe_targets(kept, target_scorer, drops)

    # Identity share: identity / total ≈ identity_fraction, i.e. identity ≈ f / (1 - f) × the rest.
    rest = sum(len(v) for k, v in kept.items() if not k.endswith("/identity"))
    fraction = min(max(config.identity_fraction, 0.0), 0.9)
    target = round(fraction / (1 - fraction) * rest)
    identity_names = [k for k in kept if k.endswith("/identity")]
    pooled = [(name, t) for name in identity_names for t in kept[name]]
    if len(pooled) > target:  # keep a hash-ordered share of every identity source
        chosen = {id(t) for _, t in hash_sample(pooled, target, config.seed, lambda p: p[1].question + p[1].answer)}
        for name in identity_names:
            before = len(kept[name])
            kept[name] = [t for t in kept[name] if id(t) in chosen]
            if before > len(kept[name]):
                drops[name]["over the identity share"] += before - len(kept[name])
    short = target - sum(len(kept[name]) for name in identity_names)
    if short > 0 and config.identity_top_up:
        pool = hash_sample([s for s in sources.pku if s.is_safe], len(sources.pku), config.seed, lambda s: s.answer)
        top_up: list[CorrectionTriple] = []
        for label in pool:
            if len(top_up) >= short:
                break
            triple = _identity(label.source, label.question, label.answer)
            if (accepted_triple := accept("pku-saferlhf-mini/identity", triple)) is not None:
                top_up.append(accepted_triple)
        kept["pku-saferlhf-mini/identity"] = top_up

    every = [t for triples in kept.values() for t in triples]
    every.sort(key=lambda t: stable_hash(config.seed, "order", *pair_key(t.question, t.answer)))
    splits: dict[Split, list[CorrectionTriple]] = {"train": [], "validation": []}
    for triple in every:
        splits[split_of(triple.question, config.validation_fraction, config.seed)].append(triple)
    out = Path(config.output_dir)
    write_jsonl(out / "train.jsonl", splits["train"])
    write_jsonl(out / "validation.jsonl", splits["validation"])
    write_jsonl(out / "validation_smollm2.jsonl", [t for t in splits["validation"] if t.source in SMOLLM2_SOURCES])

    counts = {split: _count(items, lambda t: (t.source, t.kind)) for split, items in splits.items()}
    total = len(every)
    return {
        "files": ["train.jsonl", "validation.jsonl", "validation_smollm2.jsonl"],
        "counts": counts,
        "totals": {split: len(items) for split, items in splits.items()},
        "kinds": dict(Counter(t.kind for t in every)),
        "identity_share": round(sum(t.kind == "identity" for t in every) / total, 3) if total else None,
        "identity_target": target,
        "dropped": {name: dict(sorted(c.items())) for name, c in sorted(drops.items()) if c},
        "generation": generation,
        "token_limit_applied": count_tokens is not None and config.max_tokens > 0,
    }


def _keep_safe_targets(
    kept: dict[str, list[CorrectionTriple]], scorer: CostScorer, drops: dict[str, Counter[str]]
) -> None:
    """Drop corrections that the gate still scores above its threshold: a "safer" answer that keeps the
    harmful content must not become a target (identity triples are left alone)."""
    threshold = default_threshold(scorer)
    for name, triples in kept.items():
        if name.endswith("/identity") or not triples:
            continue
        costs = score_batched(scorer, [t.question for t in triples], [t.correction for t in triples])
        kept[name] = [t for t, c in zip(triples, costs, strict=True) if c <= threshold]
        if len(kept[name]) < len(triples):
            drops[name]["correction above the gate's threshold"] += len(triples) - len(kept[name])


def _count(items: Iterable[T], key: Callable[[T], tuple[str, str]]) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = defaultdict(dict)
    for (outer, inner), n in sorted(Counter(key(i) for i in items).items()):
        nested[outer][inner] = n
    return dict(nested)


# ---------------------------------------------------------------- scorer corpus


def clean_labels(
    labels: Iterable[SafetyLabel], max_chars: int, drops: dict[str, Counter[str]]
) -> tuple[list[SafetyLabel], list[SafetyLabel]]:
    """Whitespace-normalised labels without empty or over-long ones (counted in ``drops``), deduplicated by
    (question, answer): returns (kept, duplicates) so a caller can count conflicting labels."""
    cleaned: list[SafetyLabel] = []
    for label in labels:
        question, answer = normalize_whitespace(label.question), normalize_whitespace(label.answer)
        if not (question and answer):
            drops[label.source]["empty after whitespace normalisation"] += 1
        elif len(question) + len(answer) > max_chars:
            drops[label.source]["over max_chars"] += 1
        else:
            cleaned.append(label.model_copy(update={"question": question, "answer": answer}))
    return dedupe(cleaned, lambda s: pair_key(s.question, s.answer))


def same_question_pairs(labels: Sequence[SafetyLabel], per_question: int, seed: int) -> list[PreferencePair]:
    """Safe (chosen) vs unsafe (rejected) answers to one question from one source, at most ``per_question``."""
    groups: dict[tuple[str, str], list[SafetyLabel]] = defaultdict(list)
    for label in labels:
        groups[(label.source, question_key(label.question))].append(label)
    pairs: list[PreferencePair] = []
    for (source, _), group in groups.items():
        combos = [(s, u) for s in group if s.is_safe for u in group if not u.is_safe]
        for safe, unsafe in hash_sample(combos, per_question, seed, lambda c: c[0].answer + c[1].answer):
            pairs.append(
                PreferencePair(
                    source=source,
                    prompt=safe.question,
                    chosen=safe.answer,
                    rejected=unsafe.answer,
                    safer="chosen",
                    chosen_is_safe=True,
                    rejected_is_safe=False,
                )
            )
    return pairs


def build_scorer_corpus(config: CorpusConfig, sources: Sources) -> dict[str, Any]:
    """Write the cost scorer's data, split by question like the corrector corpus; return stats.

    ``scorer_{train,validation}.jsonl``: :class:`SafetyLabel` from PKU-SafeRLHF
    mini and Do-Not-Answer's human labels. ``scorer_pairs_{train,validation}.jsonl``:
    :class:`PreferencePair` of a safe (chosen) and an unsafe (rejected) answer to
    the same question from the same source, for the pairwise term of the cost
    loss (Safe RLHF's cost model, Dai et al. 2024), at most
    ``scorer_max_pairs_per_question`` per question."""
    drops: dict[str, Counter[str]] = defaultdict(Counter)
    labels, duplicates = clean_labels([*sources.pku, *sources.do_not_answer], config.max_chars, drops)
    first = {pair_key(s.question, s.answer): s.is_safe for s in labels}
    for dup in duplicates:
        same = first[pair_key(dup.question, dup.answer)] == dup.is_safe
        drops[dup.source]["duplicate (question, answer)" if same else "duplicate with a conflicting label"] += 1

    pairs = same_question_pairs(labels, config.scorer_max_pairs_per_question, config.seed)

    def by_split(items: Sequence[T], question: Callable[[T], str]) -> dict[Split, list[T]]:
        result: dict[Split, list[T]] = {"train": [], "validation": []}
        for item in items:
            result[split_of(question(item), config.validation_fraction, config.seed)].append(item)
        return result

    label_splits = by_split(labels, lambda s: s.question)
    pair_splits = by_split(pairs, lambda p: p.prompt)
    out = Path(config.output_dir)
    for split in ("train", "validation"):
        write_jsonl(out / f"scorer_{split}.jsonl", label_splits[split])
        write_jsonl(out / f"scorer_pairs_{split}.jsonl", pair_splits[split])
    return {
        "files": [f"scorer_{p}{s}.jsonl" for p in ("", "pairs_") for s in ("train", "validation")],
        "labels": {
            split: _count(items, lambda s: (s.source, "safe" if s.is_safe else "unsafe"))
            for split, items in label_splits.items()
        },
        "pairs": {split: dict(Counter(p.source for p in items)) for split, items in pair_splits.items()},
        "dropped": {name: dict(sorted(c.items())) for name, c in sorted(drops.items()) if c},
    }
