"""In-process vLLM as a text generator, for a GPU host.

vLLM's async engine (``vllm.v1.engine.async_llm.AsyncLLM``) already does
continuous batching, so each prompt is submitted as its own request and
awaited concurrently; there is no :class:`~aligner_proxy.core.microbatch.MicroBatcher`
here. Streaming uses ``RequestOutputKind.DELTA``; closing the stream closes
vLLM's generator, which aborts the request.

vllm is imported only when a :class:`VLLMGenerator` is created, so this module
imports on any machine; without vllm the constructor raises
:class:`~aligner_proxy.core.backends.BackendUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from aligner_proxy.core.backends import BackendError, BackendUnavailableError
from aligner_proxy.core.backends.tokenizer import (
    count_tokens,
    render_chat_template,
    special_token_strings,
    truncate_tokens,
)
from aligner_proxy.core.generation import ChatMessage, FinishReason, Generation, GenerationParams
from aligner_proxy.core.models import DEFAULT_CACHE_DIR, resolve_model

logger = logging.getLogger(__name__)

_INSTALL_HINT = "the vllm backend needs vLLM and a supported GPU: pip install vllm"


def import_vllm() -> ModuleType:
    """Import vllm or raise :class:`BackendUnavailableError` saying how to install it."""
    try:
        return importlib.import_module("vllm")
    except ImportError as error:
        raise BackendUnavailableError(f"{_INSTALL_HINT} ({error})") from error


def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` equivalent to ``params``.

    vLLM treats ``temperature == 0`` as greedy, like :class:`GenerationParams`.
    """
    kwargs: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p if params.temperature > 0 else 1.0,
        "seed": params.seed,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    return kwargs


def finish_reason(value: str | None) -> FinishReason:
    """vLLM's ``CompletionOutput.finish_reason`` (``"stop"``, ``"length"``, ``"abort"``, ``None``) mapped to ours."""
    return "length" if value == "length" else "stop"


class VLLMGenerator:
    """A vLLM ``AsyncLLM`` engine as a :class:`~aligner_proxy.core.generation.ChatGenerator`."""

    def __init__(self, engine: Any, tokenizer: Any, *, model_id: str, lora_request: Any = None) -> None:
        self._vllm = import_vllm()
        self._engine = engine
        self._tokenizer = tokenizer
        self._model_id = model_id
        self._lora_request = lora_request

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        dtype: str = "auto",
        adapter: str | None = None,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        **engine_kwargs: Any,
    ) -> VLLMGenerator:
        """Start an engine for ``spec`` (path, alias or Hub id); ``adapter`` is a LoRA served by vLLM.

        Extra keyword arguments go to ``vllm.AsyncEngineArgs`` (e.g. ``max_lora_rank``).
        """
        vllm = import_vllm()
        from transformers import AutoTokenizer

        from_engine_args = _async_engine_factory(vllm)
        path = resolve_model(spec, cache_dir=cache_dir)
        lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            engine_kwargs.setdefault("enable_lora", True)
            lora_request = LoRARequest("corrector", 1, resolve_model(adapter, cache_dir=cache_dir))
        args = vllm.AsyncEngineArgs(
            model=path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            **engine_kwargs,
        )
        logger.info("starting vLLM engine for %s", path)
        engine = from_engine_args(args)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(engine, tokenizer, model_id=adapter or spec, lora_request=lora_request)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def special_tokens(self) -> list[str]:
        return special_token_strings(self._tokenizer)

    def _sampling_params(self, params: GenerationParams, kind: str) -> Any:
        from vllm.sampling_params import RequestOutputKind

        return self._vllm.SamplingParams(**sampling_kwargs(params), output_kind=getattr(RequestOutputKind, kind))

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        sampling = self._sampling_params(params, "FINAL_ONLY")
        return list(await asyncio.gather(*(self._generate_one(prompt, sampling) for prompt in prompts)))

    async def _generate_one(self, prompt: str, sampling: Any) -> Generation:
        final = None
        async with contextlib.aclosing(self._requests(prompt, sampling)) as outputs:
            async for output in outputs:
                final = output
        if final is None or not final.outputs:
            raise BackendError(f"vLLM returned no output for a request to {self._model_id}")
        completion = final.outputs[0]
        return Generation(
            text=completion.text,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(completion.token_ids),
            finish_reason=finish_reason(completion.finish_reason),
        )

    async def stream(self, prompt: str, params: GenerationParams) -> AsyncGenerator[str, None]:
        sampling = self._sampling_params(params, "DELTA")
        async with contextlib.aclosing(self._requests(prompt, sampling)) as outputs:
            async for output in outputs:
                for completion in output.outputs[:1]:
                    if completion.text:
                        yield completion.text

    def _requests(self, prompt: str, sampling: Any) -> AsyncGenerator[Any, None]:
        request_id = f"aligner-proxy-{uuid.uuid4().hex}"
        kwargs = {"lora_request": self._lora_request} if self._lora_request is not None else {}
        iterator: AsyncGenerator[Any, None] = self._engine.generate(prompt, sampling, request_id, **kwargs)
        return iterator

    def count_tokens(self, text: str) -> int:
        return count_tokens(self._tokenizer, text)

    def truncate(self, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
        return truncate_tokens(self._tokenizer, text, max_tokens, keep)

    def render_chat(self, messages: list[ChatMessage]) -> str:
        return render_chat_template(self._tokenizer, messages)

    async def aclose(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            shutdown()


def _async_engine_factory(vllm: ModuleType) -> Any:
    """``AsyncLLM.from_engine_args`` (V1 engine), falling back to the older ``AsyncLLMEngine``."""
    try:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args
    except ImportError:
        return vllm.AsyncLLMEngine.from_engine_args
