"""Build the corrector and scorer corpora from the shared public data.

The corrector (an Aligner, Ji et al., NeurIPS 2024) learns ``(question, answer)
→ correction``. Its corpus mixes four kinds of triples:

- **unsafe → safe** for the same question, from people's labels:
  PKU-SafeRLHF mini (an unsafe answer → a safe answer to the same question),
  HH-RLHF harmless (rejected → chosen, short dialogues only) and Do-Not-Answer
  (a harmful model response → a harmless one to the same question);
- **upstream**: the embedded upstream's (SmolLM2) *own* answers to harmful
  instructions → the safe output the safety-tuned-LLaMAs data provides, so the
  corrector sees the answers it will actually be asked to fix;
- **identity** (~20 %): good answers corrected to themselves, so the corrector
  learns to leave them alone: SmolLM2's answers to benign instructions, topped
  up with PKU-SafeRLHF answers labelled safe when there are too few.

Everything is split train / validation *by question* (a hash of the
normalised question), so no question is in both splits, and the SmolLM2 items of
the validation split are also written on their own. The scorer corpus (safety
labels and same-question safe-vs-unsafe pairs) is split by the same hash.

SmolLM2's answers are expensive on CPU, so they are cached in a JSONL file
keyed by (model, instruction, params), flushed per batch: a killed build
resumes where it stopped.

The recipe lives in :mod:`training.data.sources` (config, the shared files),
:mod:`training.data.corrector_corpus` and :mod:`training.data.scorer_corpus`
(what goes in, cleaning, split), the answer cache in
:mod:`training.data.generation_cache`, the split and dedup keys in
:mod:`training.data.splits`; this module runs the whole build, writes
``stats.json`` and the data card with the sources' licences, and is the CLI.

CLI: ``python -m training.data.corpus --config training/configs/corpus.yaml``
(any config field can be overridden, e.g. ``--n_benign_generations 50``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from training.data.corrector_corpus import build_corrector_corpus
from training.data.generation_cache import CorpusGenerator
from training.data.scorer_corpus import build_scorer_corpus
from training.data.sources import CorpusConfig, load_sources

logger = logging.getLogger(__name__)

# name → (origin, licence). Non-commercial licences carry over to trained models.
LICENCES: dict[str, tuple[str, str]] = {
    "pku-saferlhf-mini": ("PKU-SafeRLHF, sample from ThuCCSLab/JailbreakEval `data/Safe-RLHFmini.csv`", "CC BY-NC 4.0"),
    "do-not-answer": ("Libr-AI/do-not-answer (English original)", "CC BY-NC-SA 4.0"),
    "hh-rlhf-harmless-base": ("anthropics/hh-rlhf `harmless-base/test.jsonl.gz`", "MIT"),
    "safety-only": ("vinid/safety-tuned-llamas safety-only data (instructions and safe outputs)", "CC BY-NC 4.0"),
    "safety-only-smollm2": (
        "instructions + safe outputs: vinid/safety-tuned-llamas safety-only data; answers: SmolLM2-135M-Instruct",
        "CC BY-NC 4.0 (instructions, outputs); answers from SmolLM2 (Apache-2.0)",
    ),
    "pku-saferlhf-smollm2": (
        "questions: PKU-SafeRLHF (ThuCCSLab/JailbreakEval sample) with a human-labelled unsafe answer; "
        "answers: SmolLM2-135M-Instruct",
        "CC BY-NC 4.0 (questions, paired safe answers); answers from SmolLM2 (Apache-2.0)",
    ),
    "sensitive-benign": (
        "this project (`training/data/sensitive_benign.jsonl`, `sensitive_benign_v2.jsonl`): questions and answers",
        "Apache-2.0",
    ),
    "sensitive-benign-smollm2": (
        "questions: this project (`training/data/sensitive_benign*.jsonl`); answers: SmolLM2-135M-Instruct",
        "Apache-2.0",
    ),
    "harmless-smollm2": (
        "instructions: Alpaca-derived harmless set (busycalibrating/AdversariaLLM); answers: SmolLM2-135M-Instruct",
        "CC BY-NC 4.0 (Alpaca-derived instructions); answers from SmolLM2 (Apache-2.0)",
    ),
}


# ---------------------------------------------------------------- the whole build


def build(config: CorpusConfig, generator: CorpusGenerator | None = None) -> dict[str, Any]:
    """Build what ``config`` asks for under ``output_dir``, plus ``stats.json`` and ``data_card.md``.

    Without a ``generator``, the configured upstream model is loaded when the
    corrector corpus needs answers or token counts, and closed afterwards."""
    started = time.perf_counter()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = load_sources(config)
    stats: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "load_reports": [r.to_dict() for r in sources.reports],
    }
    if config.corrector:
        needs_model = config.n_harmful_generations > 0 or config.n_benign_generations > 0 or config.max_tokens > 0
        owned = generator is None and needs_model
        if owned:
            generator = _load_generator(config)
        try:
            target_scorer = None
            if config.target_gate:
                from aligner_proxy.core.loading import load_cost_scorer

                target_scorer = load_cost_scorer(config.target_gate)
            stats["corrector"] = build_corrector_corpus(config, sources, generator, target_scorer)
        finally:
            if owned:
                _close(generator)
    if config.scorer:
        stats["scorer"] = build_scorer_corpus(config, sources)
    used = {name for split in stats.get("corrector", {}).get("counts", {}).values() for name in split}
    used |= {"pku-saferlhf-mini", "do-not-answer"} if config.scorer else set()
    stats["licences"] = {name: {"origin": LICENCES[name][0], "licence": LICENCES[name][1]} for name in sorted(used)}
    stats["seconds"] = round(time.perf_counter() - started, 1)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    (out / "data_card.md").write_text(render_data_card(stats))
    return stats


def _load_generator(config: CorpusConfig) -> CorpusGenerator:
    from aligner_proxy.core.backends.transformers import TransformersGenerator
    from aligner_proxy.core.models import DEFAULT_CACHE_DIR

    cache_dir = Path(config.model_cache_dir).expanduser() if config.model_cache_dir else DEFAULT_CACHE_DIR
    logger.info("loading %s", config.model)
    return TransformersGenerator.load(config.model, cache_dir=cache_dir, max_batch_size=config.batch_size)


def _close(generator: object) -> None:
    import asyncio
    import inspect

    aclose = getattr(generator, "aclose", None)
    if aclose is not None:
        result = aclose()
        if inspect.isawaitable(result):
            asyncio.run(result)  # type: ignore[arg-type]


# ---------------------------------------------------------------- data card and CLI


def render_data_card(stats: dict[str, Any]) -> str:
    """A human-readable summary of ``stats``: what is in each file, where it came from, under which licence."""
    lines = ["# Corpus data card", "", "Built by `python -m training.data.corpus` from the shared public data.", ""]
    corrector = stats.get("corrector")
    if corrector:
        lines += [
            "## Corrector corpus (`CorrectionTriple`)",
            "",
            f"Files: {', '.join(f'`{f}`' for f in corrector['files'])}. Split by a hash of the normalised question "
            f"(validation fraction {stats['config']['validation_fraction']}); `validation_smollm2.jsonl` is the "
            "part of `validation.jsonl` whose answers SmolLM2 wrote.",
            "",
            "| split | source | kind | items |",
            "| --- | --- | --- | ---: |",
        ]
        for split, per_source in corrector["counts"].items():
            for source, kinds in per_source.items():
                lines += [f"| {split} | {source} | {kind} | {n} |" for kind, n in kinds.items()]
        lines += [
            "",
            f"Totals: {corrector['totals']}; identity share {corrector['identity_share']} "
            f"(target {stats['config']['identity_fraction']}).",
        ]
        if corrector.get("generation"):
            gen = corrector["generation"]
            lines += [
                "",
                f"SmolLM2 answers: model `{gen['model']}`, greedy, {gen['params']['max_new_tokens']} new tokens, "
                f"chat template; {gen['instructions']['harmful']} harmful + {gen['instructions']['benign']} benign "
                f"instructions; {gen['generated_this_run']} generated in this "
                f"run ({gen['seconds_this_run']} s), {gen['from_cache']} from the cache; "
                f"{gen['truncated_at_max_new_tokens']} cut at max_new_tokens; refusal rate {gen['refusal_rate']}.",
            ]
        lines += ["", "Dropped while building:", "", *_drop_lines(corrector["dropped"]), ""]
    scorer = stats.get("scorer")
    if scorer:
        lines += [
            "## Scorer corpus",
            "",
            "`scorer_*.jsonl`: `SafetyLabel` (human labels); `scorer_pairs_*.jsonl`: `PreferencePair` of a safe "
            "(chosen) and an unsafe (rejected) answer to the same question, `safer = chosen`.",
            "",
            "| split | source | safe | unsafe | pairs |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for split, per_source in scorer["labels"].items():
            for source, n in per_source.items():
                pairs = scorer["pairs"][split].get(source, 0)
                lines.append(f"| {split} | {source} | {n.get('safe', 0)} | {n.get('unsafe', 0)} | {pairs} |")
        lines += ["", "Dropped while building:", "", *_drop_lines(scorer["dropped"]), ""]
    lines += [
        "## Bad rows in the source files",
        "",
        "| loader source | rows | records | bad rows |",
        "| --- | ---: | ---: | --- |",
    ]
    for report in stats["load_reports"]:
        bad = ", ".join(f"{reason}: {n}" for reason, n in report["bad"].items()) or "none"
        lines.append(f"| {report['source']} | {report['rows']} | {report['records']} | {bad} |")
    lines += [
        "",
        "## Sources and licences",
        "",
        "| source | origin | licence |",
        "| --- | --- | --- |",
        *(f"| {name} | {info['origin']} | {info['licence']} |" for name, info in stats["licences"].items()),
        "",
        "**Non-commercial licences carry over.** PKU-SafeRLHF (CC BY-NC 4.0), Do-Not-Answer (CC BY-NC-SA 4.0), the "
        "safety-only data (CC BY-NC 4.0) and the Alpaca-derived instructions (CC BY-NC 4.0) allow non-commercial use "
        "only: a model trained on this corpus inherits that restriction and may be used non-commercially only; "
        "Do-Not-Answer's ShareAlike term also asks that adaptations be shared under the same licence. "
        "Cite the sources in the model card.",
        "",
        "Caveats: HH-RLHF `chosen` is the answer people preferred, not one labelled safe; PKU-SafeRLHF and "
        "Do-Not-Answer labels are per response. None of this data is a held-out benchmark for the project's claims.",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(stats["config"], sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _drop_lines(dropped: dict[str, dict[str, int]]) -> list[str]:
    return [f"- {name}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()) for name, reasons in dropped.items()] or [
        "- nothing"
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.corpus",
        description="Build the corrector and scorer corpora. Options override the YAML config.",
    )
    parser.add_argument("--config", type=Path, help="YAML file of CorpusConfig fields")
    for f in dataclasses.fields(CorpusConfig):
        # Values stay strings here; the pydantic dataclass converts and validates them.
        parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, metavar="VALUE", help=f.metadata.get("help"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config", None)
    try:
        config = CorpusConfig.from_yaml(config_path, **args) if config_path else CorpusConfig(**args)
    except pydantic.ValidationError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = build(config)

    from rich.console import Console

    console = Console()
    if "corrector" in stats:
        corrector = stats["corrector"]
        console.print(f"corrector: {corrector['totals']} kinds={corrector['kinds']}")
    if "scorer" in stats:
        console.print(f"scorer pairs: {stats['scorer']['pairs']}")
    console.print(f"wrote {config.output_dir} in {stats['seconds']} s (see data_card.md, stats.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
