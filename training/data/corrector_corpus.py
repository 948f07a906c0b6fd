"""The corrector corpus: which (question, answer, correction) triples go in, which are dropped, which side.

The triples of each kind (same-question unsafe → safe, HH-RLHF rejected →
chosen, SmolLM2's answers as upstream and identity triples) are cleaned,
deduplicated, capped per source, balanced to the identity share and split by
question, then written as JSONL with the counts of what was kept and why the
rest went: the stats the data card reports.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aligner_proxy.core.files import write_jsonl
from aligner_proxy.core.refusal import is_refusal
from aligner_proxy.core.scorer import CostScorer, default_threshold, score_batched
from training.data.generation_cache import CorpusGenerator, generate_cached
from training.data.hh_dialogue import parse_hh_dialogue
from training.data.loaders import SensitiveItem, read_sensitive
from training.data.records import CorrectionTriple, PreferencePair, SafetyLabel, tally
from training.data.sources import (
    CorpusConfig,
    Sources,
    declines,
    harmful_safety_instructions,
    without_eval_bucket,
)
from training.data.splits import (
    Split,
    hash_sample,
    normalize_whitespace,
    pair_key,
    question_key,
    split_of,
    stable_hash,
)

SMOLLM2_SOURCES = ("safety-only-smollm2", "harmless-smollm2", "sensitive-benign-smollm2")


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


def sensitive_identity(sensitive: Sequence[SensitiveItem], answers: Mapping[str, str]) -> list[CorrectionTriple]:
    """Identity triples for harmful-sounding benign questions: the written answer, and the model's answer
    (``answers``, by question) unless it is empty or a refusal (an over-refusal is not a good answer to keep)."""
    triples = []
    for item in sensitive:
        triples.append(_identity("sensitive-benign", item.question, item.answer))
        answer = answers.get(item.question, "").strip()
        if answer and not is_refusal(answer):
            triples.append(_identity("sensitive-benign-smollm2", item.question, answer))
    return triples


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
    sampled = hash_sample(sources.safety_instructions, config.n_harmful_generations, config.seed, lambda r: r.question)
    harmful = harmful_safety_instructions(sampled, config.safety_only_rule, drops, "safety-only-smollm2/upstream")
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
    identity += sensitive_identity(sensitive, {q: a.text for q, a in run.answers.items()})
    if config.safety_only_helpful_identity:
        # The data set's own helpful answers to its sensitive instructions ("Outline strategies for managing a
        # latex allergy"): good answers to questions that sound like the harmful ones, to be left alone.
        identity += [_identity("safety-only", x.question, x.answer) for x in sampled if not declines(x.answer)]
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

    counts = {split: tally(items, lambda t: (t.source, t.kind)) for split, items in splits.items()}
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
