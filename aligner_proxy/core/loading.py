"""Loads the core from plain values: a cost scorer, a corrector, the alignment pipeline.

The proxy, the batch tools, the trainers and the evals all build their models
here, so one spelling (``smollm2``, ``cost-minilm-ft-v3``, a directory) means
the same model everywhere. :class:`CoreConfig` is the one owner of the core's
defaults; the proxy's settings read their defaults from it. Nothing here knows
of HTTP serving or environment variables.

Model loading is blocking and slow (seconds to minutes): call these from a
worker thread in async code.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aligner_proxy.core.corrector import Corrector
from aligner_proxy.core.generation import GenerationParams, TextGenerator
from aligner_proxy.core.microbatch import model_executor
from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from aligner_proxy.core.policy import AlignmentPipeline
from aligner_proxy.core.scorer import AsyncScorer, CostScorer
from aligner_proxy.core.template import DEFAULT_TEMPLATE, AlignerTemplate
from aligner_proxy.weights import CORRECTOR, COST_SCORER, resolve_shipped

if TYPE_CHECKING:
    from aligner_proxy.core.backends.transformers import TransformersGenerator

logger = logging.getLogger(__name__)

CorrectorBackend = Literal["transformers", "remote", "vllm"]
Dtype = Literal["float32", "bfloat16", "float16"]
ScorerDtype = Literal["auto", "float32", "bfloat16"]


@dataclass(frozen=True)
class CoreConfig:
    """Which scorer and corrector the pipeline runs, and the limits it runs them under."""

    scorer: str = COST_SCORER
    scorer_dtype: ScorerDtype = "auto"  # bfloat16 where the CPU runs it natively (2.7x the gate's speed), else float32
    corrector_model: str = "smollm2"
    corrector_adapter: str | None = "auto"  # 'auto': the shipped Aligner on smollm2; 'none': zero-shot base
    corrector_backend: CorrectorBackend = "transformers"
    corrector_url: str | None = None  # the completions server of corrector_backend='remote'
    corrector_api_key: str | None = None
    corrector_timeout_s: float = 300.0  # one remote correction, every byte and every retry included
    corrector_tokenizer: str | None = None  # the remote corrector's tokenizer: exact budgets, its special tokens
    corrector_prompt_lookup_tokens: int = 20  # copy speculation for lone greedy corrections (transformers); 0: off
    corrector_template: str = DEFAULT_TEMPLATE
    corrector_max_new_tokens: int = 256
    corrector_length_ratio: float | None = 1.5  # budget: 1.5 × the answer's tokens + 32, up to max_new_tokens
    corrector_stop_loops: bool = True  # end a correction where it closes a repetition loop (local backend)
    corrector_max_question_tokens: int = 128  # question budget in the Aligner prompt (tail kept)
    corrector_max_answer_tokens: int = 256  # answer budget in the Aligner prompt (head kept)
    alignment_timeout_s: float = 300.0  # scoring + correcting one answer
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    cache_dir: Path = DEFAULT_CACHE_DIR
    dtype: Dtype = "float32"

    def adapter_spec(self) -> str | None:
        """The adapter to load: resolves ``auto`` and ``none``."""
        adapter = self.corrector_adapter
        if adapter is None or adapter.lower() in ("", "none"):
            return None
        if adapter == "auto":
            return CORRECTOR if self.corrector_model == "smollm2" else None
        return adapter


class ModelLoader:
    """Loads each model once, sharing bases (a pool) and the one worker thread model work runs on."""

    def __init__(self, config: CoreConfig) -> None:
        from aligner_proxy.core.models import ModelPool

        self.config = config
        self.executor: Executor = model_executor()
        self.pool = ModelPool()

    def local_generator(
        self, spec: str, adapter: str | None = None, *, prompt_lookup_tokens: int = 0
    ) -> TransformersGenerator:
        """An in-process transformers generator for ``spec`` (plus a LoRA adapter)."""
        from aligner_proxy.core.backends.transformers import TransformersGenerator

        c = self.config
        return TransformersGenerator.load(
            spec,
            cache_dir=c.cache_dir,
            dtype=c.dtype,
            adapter=resolve_shipped(adapter) if adapter else None,
            pool=self.pool,
            executor=self.executor,
            model_id=adapter,
            max_batch_size=c.max_batch_size,
            batch_wait_ms=c.batch_wait_ms,
            prompt_lookup_tokens=prompt_lookup_tokens,
        )

    def corrector_generator(self) -> TextGenerator:
        """The corrector's generator on the configured backend."""
        c = self.config
        if c.corrector_backend == "remote":
            from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator

            if c.corrector_url is None:
                raise ValueError("corrector_backend=remote needs corrector_url")
            return RemoteCompletionsGenerator(
                c.corrector_url,
                c.corrector_model,
                api_key=c.corrector_api_key,
                timeout_s=c.corrector_timeout_s,
                deadline_s=c.corrector_timeout_s,
                tokenizer=c.corrector_tokenizer,
            )
        adapter = c.adapter_spec()
        if c.corrector_backend == "vllm":
            from aligner_proxy.core.backends.vllm import VLLMGenerator

            return VLLMGenerator.load(
                c.corrector_model, cache_dir=c.cache_dir, adapter=resolve_shipped(adapter) if adapter else None
            )
        return self.local_generator(c.corrector_model, adapter, prompt_lookup_tokens=c.corrector_prompt_lookup_tokens)

    def scorer(self) -> CostScorer:
        return load_cost_scorer(self.config.scorer, cache_dir=self.config.cache_dir, dtype=self.config.scorer_dtype)


def load_cost_scorer(
    spec: str, *, cache_dir: Path = DEFAULT_CACHE_DIR, max_length: int = 512, dtype: ScorerDtype = "float32"
) -> CostScorer:
    """A cost scorer by name: ``heuristic``, a shipped scorer, an embedding-head directory, or a classifier.

    The proxy's gate, the batch corrector and the evals' judges all resolve a
    scorer here, so one spelling means the same model everywhere.
    ``max_length`` applies to sequence classifiers (an embedding head keeps the
    length it was trained with). ``dtype`` is the model's weights; ``"auto"``
    is bfloat16 on a CPU that runs it natively (on its validation split the
    shipped gate's costs move by 0.08 at most and 2 flags in 1,504 change:
    docs/benchmarks.md), else float32. Trainers keep float32.
    """
    if spec == "heuristic":
        from aligner_proxy.core.heuristic import KeywordCostScorer

        return KeywordCostScorer()
    path = resolve_shipped(spec)
    if (Path(path) / "head_config.json").is_file():
        from aligner_proxy.core.backends.embedding import EmbeddingHeadScorer

        return EmbeddingHeadScorer.load(path, cache_dir=cache_dir, model_id=spec, dtype=dtype)
    from aligner_proxy.core.backends.classifier import SequenceClassifierScorer

    return SequenceClassifierScorer.load(spec, cache_dir=cache_dir, max_length=max_length, dtype=dtype)


def build_corrector(config: CoreConfig, generator: TextGenerator) -> Corrector:
    """The Aligner corrector over ``generator`` with the configured template and token budgets."""
    return Corrector(
        generator,
        template=AlignerTemplate(config.corrector_template),
        params=GenerationParams(max_new_tokens=config.corrector_max_new_tokens, stop_loops=config.corrector_stop_loops),
        max_question_tokens=config.corrector_max_question_tokens,
        max_answer_tokens=config.corrector_max_answer_tokens,
        length_ratio=config.corrector_length_ratio,
    )


def load_corrector(config: CoreConfig, loader: ModelLoader | None = None) -> Corrector:
    """Load the configured corrector (blocking)."""
    return build_corrector(config, (loader or ModelLoader(config)).corrector_generator())


def make_pipeline(config: CoreConfig, *, scorer: CostScorer, corrector_generator: TextGenerator) -> AlignmentPipeline:
    """The core policy over a scorer and a corrector generator (also what tests use with fakes).

    The scorer's batcher gets a worker thread of its own rather than the
    generators' one: a generation batch holds that thread for as long as it
    decodes (tens of seconds for a 256-token correction on CPU), and a scoring
    call of a few milliseconds queued behind it would make every gated request
    wait for other requests' corrections. The brief overlap of two torch calls
    on the same cores costs far less than that.
    """
    batch_kw: dict[str, Any] = {"max_batch_size": config.max_batch_size * 4, "max_wait_ms": config.batch_wait_ms}
    return AlignmentPipeline(
        AsyncScorer(scorer, batch_kw),
        build_corrector(config, corrector_generator),
        timeout_s=config.alignment_timeout_s,
    )


def load_pipeline(config: CoreConfig, loader: ModelLoader | None = None) -> AlignmentPipeline:
    """Load the scorer and the corrector ``config`` names (blocking): the core without a proxy."""
    loader = loader or ModelLoader(config)
    logger.info("loading scorer %s and corrector %s", config.scorer, config.corrector_model)
    return make_pipeline(config, scorer=loader.scorer(), corrector_generator=loader.corrector_generator())
