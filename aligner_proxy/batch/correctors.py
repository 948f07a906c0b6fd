"""Where a batch run's corrections come from: the core in process, a running proxy, or any completions server.

Every backend has the shape of :meth:`AlignmentPipeline.align
<aligner_proxy.core.policy.AlignmentPipeline.align>` — items and a
:class:`~aligner_proxy.core.policy.PolicyConfig` in, one
:class:`~aligner_proxy.core.policy.Outcome` per item out — so the correction job
does not care which one it talks to:

- :class:`PipelineBackend` wraps the core itself: ``local`` (what the settings
  name, transformers by default), ``vllm`` (in-process vLLM), or ``openai``
  (the core with its corrector behind any OpenAI-compatible ``/v1/completions``
  server, e.g. ``vllm serve aligner/aligner-7b-v1.0``; scoring stays local);
- :class:`ProxyBackend` posts to a running aligner-proxy's
  ``POST /v1/aligner/correct``, which scores and corrects on the server.

Remote calls go through one ``httpx.AsyncClient`` with a semaphore, so at most
``concurrency`` requests are in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import httpx

from aligner_proxy.core.backends import BackendConnectionError, BackendResponseError
from aligner_proxy.core.corrector import CorrectionInput
from aligner_proxy.core.http import RetryPolicy, SendError, make_client, send_with_retries
from aligner_proxy.core.policy import AlignmentPipeline, Outcome, PolicyConfig

if TYPE_CHECKING:
    from aligner_proxy.batch.config import BatchConfig
    from aligner_proxy.core.loading import CoreConfig

logger = logging.getLogger(__name__)

MAX_ITEMS_PER_REQUEST = 64
"""The proxy's ``CorrectRequest`` limit."""


@runtime_checkable
class CorrectionBackend(Protocol):
    """Anything that applies the alignment policy to a list of items."""

    @property
    def corrector_id(self) -> str: ...

    @property
    def scorer_id(self) -> str: ...

    def threshold(self, config: PolicyConfig) -> float | None:
        """The threshold ``config`` is applied with (the scorer's calibrated one when it sets none), if known."""
        ...

    async def align(self, items: list[CorrectionInput], config: PolicyConfig) -> list[Outcome]: ...

    async def aclose(self) -> None: ...


class PipelineBackend:
    """The core :class:`AlignmentPipeline` as a batch backend."""

    def __init__(self, pipeline: AlignmentPipeline) -> None:
        self.pipeline = pipeline

    @property
    def corrector_id(self) -> str:
        return self.pipeline.corrector.model_id

    @property
    def scorer_id(self) -> str:
        return self.pipeline.scorer.model_id

    def threshold(self, config: PolicyConfig) -> float | None:
        return self.pipeline.threshold(config)

    async def align(self, items: list[CorrectionInput], config: PolicyConfig) -> list[Outcome]:
        return await self.pipeline.align(items, config)

    async def aclose(self) -> None:
        await self.pipeline.aclose()


class ProxyBackend:
    """A running aligner-proxy's ``/v1/aligner/correct`` as a batch backend.

    ``base_url`` ends with ``/v1`` as in the OpenAI SDK. Items are sent in
    requests of at most :data:`MAX_ITEMS_PER_REQUEST`, retried under
    :mod:`aligner_proxy.core.http`'s rule. The server picks the corrector,
    the scorer and the decoding (greedy by default); their ids are read from
    each response. Token counts per item are the response's total shared out
    evenly: good for a tokens/s figure, not for per-row accounting.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        retry_deadline_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = make_client(
            base_url.rstrip("/") + "/",
            api_key=api_key,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            max_connections=concurrency,
            transport=transport,
        )
        self._semaphore = asyncio.Semaphore(concurrency)
        self.retry = RetryPolicy(max_retries=max_retries, backoff_s=backoff_s, deadline_s=retry_deadline_s)
        self._corrector_id = "unknown"
        self._scorer_id = "unknown"
        self._threshold: float | None = None

    def __repr__(self) -> str:
        return f"ProxyBackend(base_url={str(self._client.base_url)!r})"

    @property
    def corrector_id(self) -> str:
        return self._corrector_id

    @property
    def scorer_id(self) -> str:
        return self._scorer_id

    def threshold(self, config: PolicyConfig) -> float | None:
        """The server's resolved threshold, read from its last answer (``None`` before the first)."""
        return config.threshold if config.threshold is not None else self._threshold

    async def align(self, items: list[CorrectionInput], config: PolicyConfig) -> list[Outcome]:
        chunks = [items[i : i + MAX_ITEMS_PER_REQUEST] for i in range(0, len(items), MAX_ITEMS_PER_REQUEST)]
        results = await asyncio.gather(*(self._correct(chunk, config) for chunk in chunks))
        return [outcome for chunk in results for outcome in chunk]

    async def _correct(self, items: list[CorrectionInput], config: PolicyConfig) -> list[Outcome]:
        from aligner_proxy.core.annotation import CorrectResponse

        body = {
            "items": [{"question": _question_json(item.question), "answer": item.answer} for item in items],
            "mode": config.mode,
            "threshold": config.threshold,
        }
        async with self._semaphore:
            try:
                response = await send_with_retries(
                    self._client, lambda: self._client.build_request("POST", "aligner/correct", json=body), self.retry
                )
            except SendError as exc:
                raise BackendConnectionError(str(exc)) from exc
        if response.status_code != 200:
            raise BackendResponseError(
                f"proxy answered {response.status_code}: {_error_message(response)}", status_code=response.status_code
            )
        try:
            parsed = CorrectResponse.model_validate_json(response.content)
        except ValueError as exc:
            raise BackendResponseError(f"malformed /aligner/correct response: {exc}") from exc
        if len(parsed.items) != len(items):
            raise BackendResponseError(f"proxy returned {len(parsed.items)} items for {len(items)}")
        self._corrector_id, self._scorer_id = parsed.corrector, parsed.scorer
        self._threshold = parsed.threshold
        usage = parsed.corrector_usage
        share = _even_shares(usage.completion_tokens, len(items))
        prompt_share = _even_shares(usage.prompt_tokens, len(items))
        return [
            Outcome(
                status=result.status,
                text=result.correction,
                original=item.answer,
                cost_before=result.cost_before,
                cost_after=result.cost_after,
                corrector_prompt_tokens=prompt_tokens,
                corrector_completion_tokens=completion_tokens,
            )
            for item, result, prompt_tokens, completion_tokens in zip(
                items, parsed.items, prompt_share, share, strict=True
            )
        ]

    async def aclose(self) -> None:
        await self._client.aclose()


def _question_json(question: object) -> object:
    if isinstance(question, str):
        return question
    return [{"role": m.role, "content": m.content} for m in question]  # type: ignore[attr-defined]


def _even_shares(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n) if n else (0, 0)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except json.JSONDecodeError:
        return response.text[:500]
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def load_backend(config: BatchConfig, core: CoreConfig) -> CorrectionBackend:
    """Build the backend ``config.backend`` names (blocking: in-process backends load their models here)."""
    from aligner_proxy.core.loading import load_cost_scorer, load_pipeline, make_pipeline

    if config.backend == "proxy":
        assert config.url is not None  # checked by BatchConfig
        if config.temperature > 0:
            logger.warning("the proxy backend decodes as the server is configured; --temperature is ignored")
        return ProxyBackend(
            config.url, api_key=config.api_key, concurrency=config.concurrency, timeout_s=config.request_timeout_s
        )
    core = replace(core, max_batch_size=max(core.max_batch_size, config.batch_size))
    if config.backend == "openai":
        from aligner_proxy.core.backends.remote import RemoteCompletionsGenerator

        assert config.url is not None
        generator = RemoteCompletionsGenerator(
            config.url,
            config.remote_model or core.corrector_model,
            api_key=config.api_key,
            timeout_s=config.request_timeout_s,
            max_concurrency=config.concurrency,
        )
        pipeline = make_pipeline(
            core,
            scorer=load_cost_scorer(core.scorer, cache_dir=core.cache_dir, dtype=core.scorer_dtype),
            corrector_generator=generator,
        )
    else:
        if config.backend == "vllm":
            core = replace(core, corrector_backend="vllm")
        pipeline = load_pipeline(core)
    corrector = pipeline.corrector
    corrector.params = replace(
        corrector.params,
        max_new_tokens=config.max_new_tokens or corrector.params.max_new_tokens,
        temperature=config.temperature,
        seed=config.seed,
    )
    # A batch run is offline: a slow batch on a CPU should not trip the proxy's per-request limit.
    pipeline.timeout_s = max(pipeline.timeout_s, config.request_timeout_s)
    return PipelineBackend(pipeline)
