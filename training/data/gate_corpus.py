"""The gate's corpus: labelled (question, answer) pairs from every source the project may use, with their groups.

The first cost scorer learned its training distribution (PKU-SafeRLHF and
Do-Not-Answer answers) rather than harm: on answers written by other models it
fell below the keyword heuristic. A gate has to tell a harmful answer from a
benign one whoever wrote it, and must not flag a benign question because it
*sounds* harmful. So this corpus mixes, each row tagged with its ``source``:

- ``pku-saferlhf-mini``: per-response human labels, plus same-question
  safe-vs-unsafe pairs for the ranking term;
- ``do-not-answer``: per-response human labels for six answering models (the
  model is kept on each row; the mostly-refusal safe answers are capped);
- ``hh-rlhf-harmless-base``: rejected → chosen pairs, ranking term only (HH
  says which answer people preferred, not which is safe);
- ``safety-only-smollm2``: the embedded upstream's own answers to harmful
  instructions, *unsafe* unless they refuse (the label is the refusal judge's,
  so it is noisy: the data card says so); an instruction counts as harmful
  only where the data set's own safe output declines it (``safety_only_rule``:
  a fifth of them are sensitive questions it answers helpfully), each paired with
- ``safety-only``: the data set's own safe output for the same instruction;
- ``pku-saferlhf-smollm2``: SmolLM2's answers to PKU-SafeRLHF questions that
  people labelled at least one answer to as unsafe (a harmful request by the
  data set's own labels), labelled like ``safety-only-smollm2`` and paired with
  a human-labelled safe answer to the same question where there is one: more of
  the embedded upstream's own compliant answers to *varied* harmful prompts,
  the data the first gate lacked most;
- ``harmless-smollm2``: SmolLM2's answers to benign instructions, safe;
- ``sensitive-benign`` / ``sensitive-benign-smollm2``: the project's own
  harmful-*sounding* benign questions (``training/data/sensitive_benign.jsonl``)
  with a written good answer and with SmolLM2's answer, both safe.

Rows are split train / validation by a hash of the question (all answers to
one question on one side). :data:`GROUPS` names the source groups that the
gate trainer can hold out whole, to measure generalisation to a data set or an
answering model it never saw.

CLI: ``python -m training.data.gate_corpus --config training/configs/gate_corpus.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from aligner_proxy.core.files import write_jsonl
from aligner_proxy.core.generation import GenerationParams
from aligner_proxy.core.refusal import is_refusal
from training.data.corpus import LICENCES
from training.data.generation_cache import CorpusGenerator, generate_cached, generation_key, read_generation_cache
from training.data.loaders import read_sensitive
from training.data.records import PreferencePair, SafetyLabel
from training.data.scorer_corpus import clean_labels, same_question_pairs
from training.data.sources import (
    CorpusConfig,
    SafetyOnlyRule,
    Sources,
    harmful_safety_instructions,
    load_sources,
    without_eval_bucket,
)
from training.data.splits import (
    Split,
    hash_sample,
    question_key,
    split_of,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

SENSITIVE_FILE = Path(__file__).with_name("sensitive_benign.jsonl")

GROUPS: dict[str, tuple[str, ...]] = {
    "pku": ("pku-saferlhf-mini",),
    "do-not-answer": ("do-not-answer",),
    "smollm2": ("safety-only-smollm2", "pku-saferlhf-smollm2", "harmless-smollm2", "sensitive-benign-smollm2"),
    "sensitive-benign": ("sensitive-benign", "sensitive-benign-smollm2"),
    "hh-rlhf": ("hh-rlhf-harmless-base",),
}
"""Source groups a held-out run leaves out: two data sets, one answering model, the project's own benign set."""


@pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(extra="forbid"))
class GateCorpusConfig:
    """Every knob of the gate corpus; the YAML config and CLI flags map onto these fields."""

    data_dir: str = field(metadata={"help": "directory holding the shared public data files"})
    output_dir: str = field(default="runs/gate_corpus", metadata={"help": "where the files, stats and card go"})
    sensitive_file: str | list[str] = field(
        default=str(SENSITIVE_FILE), metadata={"help": "the project's sensitive-benign Q&A (a JSONL file, or several)"}
    )
    source_files: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "file names in data_dir other than the defaults, by CorpusConfig field (pku_mini_file...)"},
    )
    generation_cache: str = field(
        default="runs/corpus/generations.jsonl",
        metadata={"help": "JSONL answer cache, shared with the corrector corpus so answers are generated once"},
    )
    model: str = field(default="smollm2", metadata={"help": "the upstream whose answers are labelled"})
    model_cache_dir: str | None = field(default=None, metadata={"help": "model cache (default ~/.cache/aligner-proxy)"})
    max_new_tokens: int = field(default=128, metadata={"help": "tokens per generated answer (greedy)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    n_harmful_generations: int = field(default=400, metadata={"help": "harmful instructions SmolLM2 answers"})
    n_pku_generations: int = field(
        default=0, metadata={"help": "PKU-SafeRLHF questions with a human-labelled unsafe answer that SmolLM2 answers"}
    )
    n_benign_generations: int = field(default=300, metadata={"help": "benign instructions SmolLM2 answers"})
    safety_only_rule: SafetyOnlyRule = field(
        default="declined",
        metadata={"help": "safety-only instructions whose SmolLM2 answers are labelled: all, or declined ones only"},
    )
    max_do_not_answer_safe: int = field(
        default=1500, metadata={"help": "cap on Do-Not-Answer's safe answers (mostly refusals); unsafe ones all kept"}
    )
    max_hh_pairs: int = field(default=800, metadata={"help": "cap on HH-RLHF rejected→chosen ranking pairs"})
    max_pairs_per_question: int = field(default=4, metadata={"help": "cap on same-question safe/unsafe pairs"})
    max_chars: int = field(default=6000, metadata={"help": "drop a pair whose question+answer is longer"})
    validation_fraction: float = field(default=0.15, metadata={"help": "share of questions held out"})
    seed: int = field(default=0, metadata={"help": "salt of the samples and the split (the corpus builder's)"})

    @property
    def generation_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)


@dataclasses.dataclass
class GateCorpus:
    labels: list[SafetyLabel]
    pairs: list[PreferencePair]
    drops: dict[str, Counter[str]]
    generation: dict[str, Any]


def smollm2_labels(
    harmful: Sequence[SafetyLabel], answers: dict[str, str], model: str, source: str = "safety-only-smollm2"
) -> tuple[list[SafetyLabel], list[PreferencePair]]:
    """SmolLM2's answers to harmful requests, tagged ``source``: unsafe unless they refuse. Each compliant one
    is paired (ranking term) with the item's own answer, which the caller vouches is safe."""
    labels: list[SafetyLabel] = []
    pairs: list[PreferencePair] = []
    for item in harmful:
        answer = answers.get(item.question, "").strip()
        if not answer:
            continue
        complied = not is_refusal(answer)
        labels.append(
            SafetyLabel(source=source, question=item.question, answer=answer, is_safe=not complied, model=model)
        )
        if complied and item.is_safe:
            pairs.append(
                PreferencePair(
                    source=source,
                    prompt=item.question,
                    chosen=item.answer,
                    rejected=answer,
                    safer="chosen",
                    chosen_is_safe=True,
                    rejected_is_safe=False,
                )
            )
    return labels, pairs


def pku_harmful_questions(pku: Sequence[SafetyLabel]) -> list[SafetyLabel]:
    """One item per PKU-SafeRLHF question that has a human-labelled unsafe answer: its safe answer where the
    data set has one (so the caller can pair), else the unsafe one (``is_safe`` False: no pair is made)."""
    by_question: dict[str, list[SafetyLabel]] = defaultdict(list)
    for item in pku:
        by_question[question_key(item.question)].append(item)
    chosen: list[SafetyLabel] = []
    for items in by_question.values():
        if all(x.is_safe for x in items):
            continue
        chosen.append(next((x for x in items if x.is_safe), items[0]))
    return chosen


def assemble(config: GateCorpusConfig, sources: Sources, generator: CorpusGenerator | None) -> GateCorpus:
    """Every labelled answer and ranking pair, cleaned and deduplicated (generates what the cache lacks)."""
    drops: dict[str, Counter[str]] = defaultdict(Counter)
    sources = without_eval_bucket(sources, drops)
    sensitive = read_sensitive(config.sensitive_file)
    harmful = hash_sample(sources.safety_instructions, config.n_harmful_generations, config.seed, lambda r: r.question)
    benign = hash_sample(
        sources.harmless_instructions, config.n_benign_generations, config.seed, lambda r: r.instruction
    )
    declined = harmful_safety_instructions(harmful, config.safety_only_rule, drops, "safety-only-smollm2")
    pku_harmful = hash_sample(
        pku_harmful_questions(sources.pku), config.n_pku_generations, config.seed, lambda r: r.question
    )
    instructions = [r.question for r in [*declined, *pku_harmful]]
    instructions += [i.instruction for i in benign] + [s.question for s in sensitive]
    generation: dict[str, Any] = {}
    answers: dict[str, str] = {}
    if generator is not None:
        run = generate_cached(
            generator,
            instructions,
            config.generation_params,
            Path(config.generation_cache),
            batch_size=config.batch_size,
        )
        answers = {text: entry.text for text, entry in run.answers.items()}
        generation = {
            "model": generator.model_id,
            "instructions": len(set(instructions)),
            "generated_this_run": run.generated,
            "from_cache": run.from_cache,
            "seconds_this_run": round(run.seconds, 1),
        }
    else:
        cached = read_generation_cache(Path(config.generation_cache))
        for text in instructions:
            entry = cached.get(generation_key(config.model, text, config.generation_params))
            if entry is not None:
                answers[text] = entry.text
        generation = {"model": config.model, "instructions": len(set(instructions)), "from_cache": len(answers)}
    model = config.model
    labels: list[SafetyLabel] = [*sources.pku]
    dna_unsafe = [x for x in sources.do_not_answer if not x.is_safe]
    dna_safe = [x for x in sources.do_not_answer if x.is_safe]
    kept_safe = hash_sample(dna_safe, config.max_do_not_answer_safe, config.seed, lambda r: r.question + r.answer)
    drops["do-not-answer"]["safe answer over max_do_not_answer_safe"] += len(dna_safe) - len(kept_safe)
    labels += dna_unsafe + kept_safe
    labels += [item.model_copy(update={"source": "safety-only"}) for item in harmful]
    smol_labels, smol_pairs = smollm2_labels(declined, answers, model)
    pku_labels, pku_pairs = smollm2_labels(pku_harmful, answers, model, source="pku-saferlhf-smollm2")
    labels += smol_labels + pku_labels
    smol_pairs += pku_pairs
    for item in benign:
        answer = answers.get(item.instruction, "").strip()
        if answer:
            labels.append(
                SafetyLabel(
                    source="harmless-smollm2", question=item.instruction, answer=answer, is_safe=True, model=model
                )
            )
    for s in sensitive:
        labels.append(SafetyLabel(source="sensitive-benign", question=s.question, answer=s.answer, is_safe=True))
        answer = answers.get(s.question, "").strip()
        if answer:
            labels.append(
                SafetyLabel(
                    source="sensitive-benign-smollm2", question=s.question, answer=answer, is_safe=True, model=model
                )
            )
    labels = _clean(labels, config, drops)
    pairs = same_question_pairs([x for x in labels if x.source == "pku-saferlhf-mini"], 4, config.seed)
    pairs += smol_pairs
    hh = hash_sample(sources.hh, config.max_hh_pairs, config.seed, lambda p: p.prompt + p.chosen)
    pairs += [p.model_copy(update={"safer": "chosen"}) for p in hh if p.chosen.strip() != p.rejected.strip()]
    return GateCorpus(labels=labels, pairs=pairs, drops=drops, generation=generation)


def _clean(labels: list[SafetyLabel], config: GateCorpusConfig, drops: dict[str, Counter[str]]) -> list[SafetyLabel]:
    kept, duplicates = clean_labels(labels, config.max_chars, drops)
    for dup in duplicates:
        drops[dup.source]["duplicate (question, answer)"] += 1
    return kept


def split(items: Sequence[T], question: Callable[[T], str], config: GateCorpusConfig) -> dict[Split, list[T]]:
    result: dict[Split, list[T]] = {"train": [], "validation": []}
    for item in items:
        result[split_of(question(item), config.validation_fraction, config.seed)].append(item)
    return result


def build(
    config: GateCorpusConfig, generator: CorpusGenerator | None = None, *, generate: bool = True
) -> dict[str, Any]:
    """Write ``gate_{train,validation}.jsonl``, ``gate_pairs_{train,validation}.jsonl``, stats and the data card."""
    started = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    legacy = CorpusConfig(data_dir=config.data_dir, seed=config.seed, **config.source_files)  # type: ignore[arg-type]
    sources = load_sources(legacy)
    owned = generator is None and generate
    if owned:
        from training.data.corpus import _close, _load_generator

        generator = _load_generator(
            CorpusConfig(
                data_dir=config.data_dir,
                model=config.model,
                model_cache_dir=config.model_cache_dir,
                batch_size=config.batch_size,
            )
        )
    try:
        corpus = assemble(config, sources, generator)
    finally:
        if owned:
            _close(generator)
    label_splits = split(corpus.labels, lambda s: s.question, config)
    pair_splits = split(corpus.pairs, lambda p: p.prompt, config)
    for name in ("train", "validation"):
        write_jsonl(out / f"gate_{name}.jsonl", label_splits[name])  # type: ignore[index]
        write_jsonl(out / f"gate_pairs_{name}.jsonl", pair_splits[name])  # type: ignore[index]
    used = {x.source for x in corpus.labels} | {p.source for p in corpus.pairs}
    stats: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "labels": {
            name: {
                source: dict(Counter("safe" if x.is_safe else "unsafe" for x in items if x.source == source))
                for source in sorted({x.source for x in items})
            }
            for name, items in label_splits.items()
        },
        "pairs": {name: dict(Counter(p.source for p in items)) for name, items in pair_splits.items()},
        "groups": {k: list(v) for k, v in GROUPS.items()},
        "generation": corpus.generation,
        "dropped": {k: dict(v) for k, v in sorted(corpus.drops.items()) if v},
        "licences": {k: {"origin": LICENCES[k][0], "licence": LICENCES[k][1]} for k in sorted(used) if k in LICENCES},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    (out / "data_card.md").write_text(render_data_card(stats))
    return stats


def render_data_card(stats: dict[str, Any]) -> str:
    """What is in each file, where it came from, under which licence, and how the labels were made."""
    lines = [
        "# Gate corpus data card",
        "",
        "Built by `python -m training.data.gate_corpus`. `gate_*.jsonl`: `SafetyLabel`; `gate_pairs_*.jsonl`: "
        "`PreferencePair` with `safer = chosen` (ranking term). Split by a hash of the normalised question "
        f"(validation fraction {stats['config']['validation_fraction']}).",
        "",
        "| split | source | safe | unsafe | pairs |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, per_source in stats["labels"].items():
        sources = sorted(set(per_source) | set(stats["pairs"][name]))
        for source in sources:
            n = per_source.get(source, {})
            pairs = stats["pairs"][name].get(source, 0)
            lines.append(f"| {name} | {source} | {n.get('safe', 0)} | {n.get('unsafe', 0)} | {pairs} |")
    lines += [
        "",
        "How labels were made: PKU-SafeRLHF and Do-Not-Answer are human labels per response. "
        "`safety-only-smollm2` is SmolLM2's answer to an instruction of the safety-only set (and "
        "`pku-saferlhf-smollm2` its answer to a PKU-SafeRLHF question that people labelled an answer to unsafe), "
        "labelled *unsafe* unless the refusal judge (`aligner_proxy.core.refusal`) finds a refusal. "
        + (
            "Only safety-only instructions whose own safe output declines them (a refusal, or a rebuttal opening "
            'with "No,") count as harmful; SmolLM2\'s answers to the others (sensitive questions the data set '
            "answers helpfully) are left unlabelled. "
            if stats["config"].get("safety_only_rule", "all") == "declined"
            else "Every safety-only instruction counts as harmful, so helpful answers to its sensitive-but-benign "
            "instructions are labelled unsafe (noise the card owns). "
        )
        + "An answer that complies with a harmful request counts as unsafe even where it is benign enough "
        "(noise the card owns). `harmless-smollm2` and both `sensitive-benign` sources are safe "
        "by construction (benign questions). HH-RLHF adds ranking pairs only (chosen = preferred, no safety label).",
        "",
        "Held-out groups (a gate trained without one is validated on all of it): "
        + "; ".join(f"`{k}` = {', '.join(v)}" for k, v in stats["groups"].items())
        + ".",
        "",
        "Dropped: " + (json.dumps(stats["dropped"]) if stats["dropped"] else "nothing") + ".",
        "",
        "| source | origin | licence |",
        "| --- | --- | --- |",
        *(f"| {k} | {v['origin']} | {v['licence']} |" for k, v in stats["licences"].items()),
        "",
        "**Non-commercial licences carry over** to a model trained on this corpus (PKU-SafeRLHF, Do-Not-Answer, "
        "the safety-only data and the Alpaca-derived instructions).",
        "",
        "```yaml",
        yaml.safe_dump(stats["config"], sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file of GateCorpusConfig fields")
    parser.add_argument("--no-generate", action="store_true", help="use cached answers only (no model is loaded)")
    args, rest = parser.parse_known_args(argv)
    values = yaml.safe_load(Path(args.config).read_text()) or {}
    for flag, value in zip(rest[::2], rest[1::2], strict=False):
        values[flag.lstrip("-")] = yaml.safe_load(value)
    stats = build(GateCorpusConfig(**values), generate=not args.no_generate)
    logger.info("gate corpus: %s", json.dumps(stats["labels"]))


if __name__ == "__main__":
    main()
