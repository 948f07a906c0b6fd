"""In-process generation with transformers: the CPU-friendly default backend.

:class:`TransformersGenerator` implements
:class:`aligner_proxy.core.generation.ChatGenerator`. Concurrent ``generate`` calls
with equal :class:`GenerationParams` are merged by a
:class:`~aligner_proxy.core.microbatch.MicroBatcher` into one left-padded
``model.generate`` call; all model work runs on one worker thread (share it
between models with ``executor=model_executor()``), so the event loop never
blocks and a shared base model with a LoRA adapter can switch adapters safely.

The tokenizer helpers live in :mod:`aligner_proxy.core.backends.tokenizer`
(the vLLM, remote and classifier backends use them too) and the streaming
plumbing in :mod:`aligner_proxy.core.backends.streaming`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Hashable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Literal

from aligner_proxy.core.backends import BackendError
from aligner_proxy.core.backends.speculation import speculative_greedy
from aligner_proxy.core.backends.streaming import CancelCriterion, LoopCriterion, StopScanner, TokenStream, cut_at_stop
from aligner_proxy.core.backends.tokenizer import (
    count_tokens,
    render_chat_template,
    special_token_strings,
    truncate_tokens,
)
from aligner_proxy.core.generation import ChatMessage, FinishReason, Generation, GenerationParams
from aligner_proxy.core.loops import DEFAULT_LOOP_GUARD
from aligner_proxy.core.microbatch import MicroBatcher
from aligner_proxy.core.models import DEFAULT_CACHE_DIR, LoadedModel, ModelPool

logger = logging.getLogger(__name__)

STOP_CRITERIA_KEPT = 32
"""Sets of stop strings whose built criterion a generator keeps (see ``TransformersGenerator._stop_criterion``)."""


class TransformersGenerator:
    """A transformers causal LM as a micro-batched :class:`~aligner_proxy.core.generation.ChatGenerator`."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        model_id: str,
        executor: Executor | None = None,
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        prompt_lookup_tokens: int = 0,
    ) -> None:
        self._loaded = loaded
        # Copy speculation (:mod:`~aligner_proxy.core.backends.speculation`): draft up to this many tokens
        # from where the last few tokens appeared before and verify them in one forward pass. Greedy output
        # is unchanged; it pays where the output copies the prompt (a corrector keeping a good answer) and
        # costs next to nothing where it does not. One sequence at a time, so only lone greedy calls use it.
        self.prompt_lookup_tokens = prompt_lookup_tokens
        self._tokenizer = loaded.tokenizer
        self._model_id = model_id
        self.max_batch_size = max_batch_size
        # A lambda, not the bound method, so tests can wrap ``_run_batch`` on the instance.
        self._batcher: MicroBatcher[str, Generation] = MicroBatcher(
            lambda key, prompts: self._run_batch(key, prompts),
            max_batch_size=max_batch_size,
            max_wait_ms=batch_wait_ms,
            executor=executor,
            name=f"generate[{model_id}]",
        )
        self._prefix_ids = _added_prefix(self._tokenizer)
        self._eos_ids = _eos_ids(loaded.base_model, self._tokenizer)
        pad = self._tokenizer.pad_token_id
        self._pad_id: int = pad if pad is not None else next(iter(sorted(self._eos_ids)), 0)
        self._special_tokens = special_token_strings(self._tokenizer)
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self._stop_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        dtype: str = "float32",
        adapter: str | None = None,
        pool: ModelPool | None = None,
        executor: Executor | None = None,
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        model_id: str | None = None,
        prompt_lookup_tokens: int = 0,
    ) -> TransformersGenerator:
        """Load ``spec`` (path, alias or Hub id; see :func:`aligner_proxy.core.models.resolve_model`).

        Pass the same ``pool`` for the upstream and the corrector so that a
        shared base model is loaded once. ``model_id`` defaults to the adapter
        spec when one is given, else ``spec``.
        """
        pool = pool if pool is not None else ModelPool()
        loaded = pool.get(spec, cache_dir=cache_dir, dtype=dtype, adapter=adapter)
        return cls(
            loaded,
            model_id=model_id or adapter or spec,
            executor=executor,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            prompt_lookup_tokens=prompt_lookup_tokens,
        )

    # -- TextGenerator

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def special_tokens(self) -> list[str]:
        """The tokenizer's special-token strings, for neutralising them in untrusted text."""
        return list(self._special_tokens)

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        return await self._batcher.submit(prompts, key=params)

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        """Blocking generation for scripts; runs on the same worker thread as the async calls."""
        return self._batcher.executor.submit(self._run_batch, params, list(prompts)).result()

    async def stream(self, prompt: str, params: GenerationParams) -> AsyncGenerator[str, None]:
        """Yield text deltas as the model produces them, stop strings applied.

        Closing the iterator early (the client went away) stops the generation
        at its next token.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def post(item: str | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        sink = TokenStream(self._tokenizer, post)

        def work() -> None:
            try:
                self._generate_now(params, [prompt], streamer=sink, cancel=cancel)
            finally:
                sink.close()

        task = asyncio.ensure_future(self._batcher.run_alone(work))
        scanner = StopScanner(params.stop)
        awaited = False
        try:
            while (delta := await queue.get()) is not None:
                text = scanner.feed(delta)
                if text:
                    yield text
                if scanner.stopped:
                    break
            if not scanner.stopped:
                rest = scanner.flush()
                if rest:
                    yield rest
                awaited = True
                await task  # re-raise a failure of the generation itself
        finally:
            cancel.set()
            if not awaited:
                task.add_done_callback(_log_stream_failure)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self._tokenizer, text)

    def truncate(self, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
        return truncate_tokens(self._tokenizer, text, max_tokens, keep)

    def render_chat(self, messages: list[ChatMessage]) -> str:
        return render_chat_template(self._tokenizer, messages)

    async def aclose(self) -> None:
        self._batcher.close()

    # -- model work (worker thread)

    def _run_batch(self, key: Hashable, prompts: list[str]) -> list[Generation]:
        params = key
        if not isinstance(params, GenerationParams):
            raise TypeError(f"batch key must be GenerationParams, got {type(key).__name__}")
        if params.seed is not None and params.temperature > 0:
            # A seeded sample must not depend on which other prompts shared its batch.
            return [g for prompt in prompts for g in self._generate_now(params, [prompt])]
        outputs: list[Generation] = []
        for start in range(0, len(prompts), self.max_batch_size):
            outputs.extend(self._generate_now(params, prompts[start : start + self.max_batch_size]))
        return outputs

    def _generate_now(
        self,
        params: GenerationParams,
        prompts: list[str],
        *,
        streamer: TokenStream | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Generation]:
        import torch
        from transformers import StoppingCriteriaList

        encoded = [self._encode(p) for p in prompts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):  # left padding: every prompt ends at the same column
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1

        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.temperature > 0,
            "pad_token_id": self._pad_id,
            "eos_token_id": sorted(self._eos_ids),
        }
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.repetition_penalty != 1.0:
            kwargs.update(repetition_penalty=params.repetition_penalty)
        criteria = StoppingCriteriaList([CancelCriterion(cancel)] if cancel is not None else [])
        if params.stop_loops:
            criteria.append(LoopCriterion(DEFAULT_LOOP_GUARD, width))
        speculate = (
            self.prompt_lookup_tokens > 0
            and len(prompts) == 1
            and params.temperature == 0
            and params.repetition_penalty == 1.0
            and streamer is None
        )
        if params.stop:  # what generate(stop_strings=...) would add, built once per set of stop strings
            criteria.append(self._stop_criterion(params.stop))

        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]), torch.inference_mode(), self._loaded.activate() as model:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            if speculate:
                new_tokens = [
                    speculative_greedy(
                        model,
                        encoded[0],
                        max_new_tokens=params.max_new_tokens,
                        eos_ids=self._eos_ids,
                        draft_tokens=self.prompt_lookup_tokens,
                        should_stop=(lambda ids: bool(criteria(torch.tensor([ids]), None).any())) if criteria else None,
                    )
                ]
            else:
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    stopping_criteria=criteria,
                    streamer=streamer,
                    **kwargs,
                )
                new_tokens = output[:, width:].tolist()
        logger.debug(
            "%s: generated for %d prompt(s) of up to %d tokens in %.2f s",
            self._model_id,
            len(prompts),
            width,
            time.perf_counter() - started,
        )
        return [self._to_generation(ids, len(prompt), params) for ids, prompt in zip(new_tokens, encoded, strict=True)]

    def _stop_criterion(self, stop: tuple[str, ...]) -> Any:
        """transformers' stop-string criterion for ``stop``, kept for the next call with the same strings.

        Building one walks the tokenizer's whole vocabulary (~40 ms for SmolLM2's 49k tokens), which
        ``generate(stop_strings=...)`` does on every call; the criterion holds no state between calls. At
        most :data:`STOP_CRITERIA_KEPT` sets are kept (clients choose their own stop strings), the least
        recently used dropped first."""
        from transformers import StopStringCriteria

        with self._stop_lock:  # ``generate_batch`` may run on a caller's thread beside the worker
            criterion = self._stop_criteria.pop(stop, None)
            if criterion is None:
                criterion = StopStringCriteria(self._tokenizer, list(stop))
            self._stop_criteria[stop] = criterion  # most recently used last
            while len(self._stop_criteria) > STOP_CRITERIA_KEPT:
                del self._stop_criteria[next(iter(self._stop_criteria))]
            return criterion

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        prefix = self._prefix_ids
        if prefix and ids[: len(prefix)] != prefix:
            ids = prefix + ids  # e.g. Llama's <s>, unless the (chat-rendered) prompt already has it
        if not ids:
            raise BackendError("cannot generate from an empty prompt with a tokenizer that adds no BOS token")
        return ids

    def _to_generation(self, new_ids: list[int], prompt_tokens: int, params: GenerationParams) -> Generation:
        completion: list[int] = []
        hit_eos = False
        for token in new_ids:
            if token in self._eos_ids:
                hit_eos = True
                break
            if token == self._pad_id:  # a row finished early (stop string, cancel) is padded
                break
            completion.append(token)
        looped = False
        if params.stop_loops and (end := DEFAULT_LOOP_GUARD.first_loop_end(completion)) is not None:
            # Where the loop first closed: a speculative step may have run past the point where a
            # token-by-token decode stops, and both must give the same text.
            completion, hit_eos, looped = completion[:end], False, True
        text = str(self._tokenizer.decode(completion, skip_special_tokens=True))
        text, stopped = cut_at_stop(text, params.stop)
        finish: FinishReason = "loop" if looped else "stop"
        if not (looped or stopped or hit_eos) and len(completion) >= params.max_new_tokens:
            finish = "length"
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(completion) + int(hit_eos),
            finish_reason=finish,
        )


def _added_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before text by default (a BOS token, usually), found empirically."""
    plain: list[int] = tokenizer("a", add_special_tokens=False)["input_ids"]
    full: list[int] = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _log_stream_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("streaming generation ended with an error after its consumer left", exc_info=task.exception())
