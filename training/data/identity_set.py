"""An evaluation set of good answers to harmful-sounding benign questions, for a corrector to leave alone.

A corrector's typical failure is refusing good answers to questions that only
sound harmful. Its training corpus already uses every question of the
harmful-sounding sets it trains on, so judging it on them again measures
memory. This builds identity triples (answer = correction) from a set written
apart from training — the written answer and the upstream's own answer (unless
empty or a refusal), as the corpus does — to be passed to
:mod:`training.eval_corrector` beside a corpus's validation split.

The upstream's answers go through the corpus's generation cache, so a rebuild
costs nothing and an interrupted one resumes.

CLI: ``python -m training.data.identity_set --sensitive_file training/data/sensitive_benign_v3.jsonl
--output runs/sensitive_v3_identity.jsonl``
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from aligner_proxy.core.files import write_jsonl
from aligner_proxy.core.generation import GenerationParams
from training.data.corrector_corpus import sensitive_identity
from training.data.generation_cache import CorpusGenerator, generate_cached
from training.data.loaders import read_sensitive
from training.data.records import CorrectionTriple


def build_identity_set(
    sensitive_files: Sequence[str | Path],
    generator: CorpusGenerator,
    cache_path: Path,
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> list[CorrectionTriple]:
    """Identity triples of the sets' written answers and of ``generator``'s greedy answers to their questions."""
    sensitive = read_sensitive(list(sensitive_files))
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    run = generate_cached(generator, [s.question for s in sensitive], params, cache_path, batch_size=batch_size)
    return sensitive_identity(sensitive, {q: a.text for q, a in run.answers.items()})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.identity_set", description=__doc__.split("\n")[0])
    parser.add_argument("--sensitive_file", nargs="+", required=True, help="harmful-sounding benign Q&A (JSONL)")
    parser.add_argument("--output", required=True, type=Path, help="CorrectionTriple JSONL to write")
    parser.add_argument("--model", default="smollm2", help="the upstream that answers (alias, path or Hub id)")
    parser.add_argument("--generation_cache", default="runs/corpus/generations.jsonl", type=Path)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args(argv)
    for path in args.sensitive_file:
        if not Path(path).is_file():
            parser.error(f"--sensitive_file {path}: no such file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from aligner_proxy.core.backends.transformers import TransformersGenerator

    generator = TransformersGenerator.load(args.model, max_batch_size=args.batch_size)
    triples = build_identity_set(
        args.sensitive_file,
        generator,
        args.generation_cache,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    write_jsonl(args.output, triples)
    by_source = dict(Counter(t.source for t in triples))
    print(f"wrote {len(triples)} identity triples to {args.output}: {by_source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
