"""One settings object for the proxy, read once at start-up and passed down.

Sources, highest priority first: explicit overrides (CLI flags), ``ALIGNER_*``
environment variables, the YAML file named by ``ALIGNER_CONFIG`` (or
``--config``), defaults. The env variables cover the one-upstream case; the
YAML file can also list several ``models``, each with its own upstream and its
own aligner policy — the request's ``model`` picks the route.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from aligner_proxy.core.loading import CoreConfig, CorrectorBackend, Dtype, ScorerDtype
from aligner_proxy.core.policy import PolicyConfig
from aligner_proxy.core.transport import TransportKind
from aligner_proxy.core.vocabulary import FailurePolicy, Mode

_CORE = CoreConfig()  # the core owns its defaults; the settings repeat none of them
_POLICY = PolicyConfig()


class PolicySettings(BaseModel):
    """How a route applies the Aligner. Each field can be overridden per request."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(
        _POLICY.mode, description="off: pass through; always: correct every answer; gated: correct above threshold"
    )
    threshold: float | None = Field(
        _POLICY.threshold,
        description="cost above which an answer counts as unsafe (logit scale); None: the scorer's own calibrated one",
    )
    block: bool = Field(
        _POLICY.block,
        description="replace answers still above threshold after correction by a refusal (on by default: "
        "training/choose_policy.py measured the trade-off)",
    )
    block_message: str = _POLICY.block_message
    failure_policy: FailurePolicy = Field(
        _POLICY.failure_policy, description="fail_open: return the original unchecked; fail_closed: 503"
    )

    def to_config(self) -> PolicyConfig:
        """The core policy these settings describe."""
        return PolicyConfig(
            mode=self.mode,
            threshold=self.threshold,
            block=self.block,
            block_message=self.block_message,
            failure_policy=self.failure_policy,
        )


class UpstreamSettings(BaseModel):
    """Where a route's answers come from: the embedded model, or an OpenAI-compatible URL."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="OpenAI-compatible base URL ending in /v1; None = embedded model")
    model: str = Field(
        "smollm2",
        description="embedded: a model spec (path, hub id or 'smollm2'); remote: the model name sent upstream",
    )
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="read the upstream key from this environment variable")

    @property
    def embedded(self) -> bool:
        return self.base_url is None

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None


class RouteSettings(BaseModel):
    """One model name served by the proxy."""

    model_config = ConfigDict(extra="forbid")

    name: str
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    aligner: PolicySettings = Field(default_factory=PolicySettings)


class Settings(BaseSettings):
    """Every knob of the proxy. Env vars use the ``ALIGNER_`` prefix (``ALIGNER_PORT=9000``)."""

    model_config = SettingsConfigDict(env_prefix="ALIGNER_", extra="forbid", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    cache_dir: Path = _CORE.cache_dir
    api_keys: list[SecretStr] = Field(default_factory=list, description="bearer keys clients must send; empty = open")
    policy_floor: bool = Field(
        False,
        description="clients may only make a route's policy stricter (mode, threshold, block, failure policy); "
        "a request that would relax it gets 403",
    )
    policy_override_keys: list[SecretStr] = Field(
        default_factory=list, description="bearer keys that may still relax policies under policy_floor"
    )

    # The one-upstream case (ignored when `models` is given).
    served_model_name: str = "smollm2-135m-instruct"
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    aligner: PolicySettings = Field(default_factory=PolicySettings)
    models: list[RouteSettings] = Field(default_factory=list)

    # The shared core (defaults: CoreConfig's).
    corrector_model: str = Field(_CORE.corrector_model, description="base model: path, hub id, or 'smollm2'")
    corrector_adapter: str | None = Field(
        _CORE.corrector_adapter,
        description="LoRA adapter: a shipped name or a directory; 'auto' = the shipped Aligner when corrector_model "
        "is 'smollm2'; 'none' = the base model prompted zero-shot",
    )
    corrector_backend: CorrectorBackend = _CORE.corrector_backend
    corrector_url: str | None = Field(None, description="completions server for corrector_backend=remote")
    corrector_api_key: SecretStr | None = None
    corrector_tokenizer: str | None = Field(
        None,
        description="corrector_backend=remote: its tokenizer (a directory or hub id) for exact token "
        "budgets and to neutralise its special tokens in untrusted text",
    )
    corrector_prompt_lookup_tokens: int = Field(
        _CORE.corrector_prompt_lookup_tokens,
        ge=0,
        description="copy speculation for lone greedy corrections on the transformers backend: tokens drafted "
        "after a match of 3+ tokens; output unchanged; 2.3x tokens/s on benign answers with the shipped Aligner, "
        "~1x on refusals (bench/copy_speculation.py); 0: off",
    )
    corrector_timeout_s: float = Field(
        _CORE.corrector_timeout_s, gt=0, description="total time for one remote correction, streamed or not"
    )
    corrector_template: str = _CORE.corrector_template
    corrector_max_new_tokens: int = Field(_CORE.corrector_max_new_tokens, ge=1)
    corrector_length_ratio: float | None = Field(
        _CORE.corrector_length_ratio,
        gt=0,
        description="a correction's token budget: this × its answer's tokens + 32 (steps of 64), up to "
        "corrector_max_new_tokens; None: always corrector_max_new_tokens",
    )
    corrector_stop_loops: bool = Field(
        _CORE.corrector_stop_loops,
        description="end a correction where its tokens close a repetition loop (3 copies of a block, 32 tokens "
        "at least; aligner_proxy.core.loops) instead of decoding to the budget; transformers backend",
    )
    corrector_max_question_tokens: int = Field(
        _CORE.corrector_max_question_tokens, ge=1, description="question budget in the Aligner prompt (tail kept)"
    )
    corrector_max_answer_tokens: int = Field(
        _CORE.corrector_max_answer_tokens, ge=1, description="answer budget in the Aligner prompt (head kept)"
    )
    scorer: str = Field(
        _CORE.scorer, description="a shipped scorer's name, 'heuristic', an embedding-head dir, or a classifier"
    )
    scorer_dtype: ScorerDtype = Field(
        _CORE.scorer_dtype,
        description="the scorer's weights: 'auto' is bfloat16 on a CPU with native bfloat16 (AVX-512 BF16, AMX), "
        "float32 elsewhere",
    )
    dtype: Dtype = _CORE.dtype

    # Serving.
    embedded_max_tokens: int = Field(256, ge=1, description="default max_tokens for the embedded upstream")
    embedded_repetition_penalty: float = Field(
        1.1, ge=1.0, le=2.0, description="the embedded upstream's repetition guard (1.0 = off)"
    )
    max_batch_size: int = Field(_CORE.max_batch_size, ge=1)
    batch_wait_ms: float = Field(_CORE.batch_wait_ms, ge=0)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    max_tokens_cap: int = Field(4096, ge=1, description="the largest max_tokens a request may ask for (else 400)")
    max_answers_per_request: int = Field(
        16, ge=1, description="answers one request may ask for: n, times the prompts of a completions request"
    )
    max_concurrent_requests: int = Field(
        256, ge=1, description="requests under /v1/ running at once; more get 429 with Retry-After"
    )
    retry_after_s: int = Field(1, ge=0, description="the Retry-After of a 429 from the admission limit")
    upstream_timeout_s: float = Field(300.0, gt=0, description="longest wait for any one read from the upstream")
    upstream_max_bytes: int = Field(
        16_000_000, ge=1024, description="the largest upstream answer read, whole or streamed (else 502)"
    )
    upstream_deadline_s: float = Field(
        600.0, gt=0, description="total time for one upstream call, streamed or not, retries included"
    )
    upstream_connect_timeout_s: float = Field(5.0, gt=0)
    upstream_transport: TransportKind = Field(
        "aiohttp",
        description="the upstream client's connection layer: aiohttp's connector behind httpx's API (a third of "
        "httpx's CPU per request, bench/upstream_client.py) or httpx's own pool",
    )
    upstream_retries: int = Field(2, ge=0, description="retries under aligner_proxy.core.http's rule")
    upstream_retry_deadline_s: float = Field(
        30.0, gt=0, description="time for all attempts and waits together, Retry-After included"
    )
    alignment_timeout_s: float = Field(
        _CORE.alignment_timeout_s, gt=0, description="limit for scoring + correcting one answer"
    )
    keepalive_interval_s: float = Field(5.0, gt=0, description="SSE comment interval while a stream is buffered")

    # The audit log (docs/audit.md) and the review page.
    audit_log: Path | None = Field(None, description="SQLite file with one row per checked answer; None: off")
    audit_queue_size: int = Field(
        1000,
        ge=1,
        description="rows waiting for the writer; when full, rows are dropped and counted, never waited for "
        "(each row holds at most 3 texts of 32,768 characters: this bounds the queue's memory)",
    )
    audit_retention_days: float | None = Field(None, gt=0, description="delete rows older than this; None: keep")
    audit_max_rows: int | None = Field(None, ge=1, description="keep at most this many rows (newest); None: no limit")
    audit_redact: str | None = Field(
        None,
        description="redaction hook 'module:function', called on each row before it is stored (return None to "
        "skip it); 'aligner_proxy.core.audit:redact_secrets' removes key-like tokens",
    )
    ui: bool | None = Field(None, description="the review page at /ui; None: on only when bound to a loopback address")

    # The LiteLLM guardrail endpoint (serving/guardrail.py).
    guardrail_questions: int = Field(
        4096, ge=1, description="pre_call questions kept for their post_call (by litellm_call_id); the oldest go first"
    )
    guardrail_question_ttl_s: float = Field(
        600.0, gt=0, description="how long a pre_call question waits for its post_call"
    )

    @model_validator(mode="after")
    def _check_routes(self) -> Settings:
        names = [route.name for route in self.routes()]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate model names in routes: {names}")
        if self.corrector_backend == "remote" and not self.corrector_url:
            raise ValueError("corrector_backend=remote needs corrector_url")
        return self

    def ui_enabled(self) -> bool:
        """Whether ``/ui`` is served: as set, or by default only to this machine (a loopback bind)."""
        if self.ui is not None:
            return self.ui
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def core_config(self) -> CoreConfig:
        """The core's part of these settings."""
        return CoreConfig(
            scorer=self.scorer,
            scorer_dtype=self.scorer_dtype,
            corrector_model=self.corrector_model,
            corrector_adapter=self.corrector_adapter,
            corrector_backend=self.corrector_backend,
            corrector_url=self.corrector_url,
            corrector_api_key=self.corrector_api_key.get_secret_value() if self.corrector_api_key else None,
            corrector_timeout_s=self.corrector_timeout_s,
            corrector_prompt_lookup_tokens=self.corrector_prompt_lookup_tokens,
            corrector_tokenizer=self.corrector_tokenizer,
            corrector_template=self.corrector_template,
            corrector_max_new_tokens=self.corrector_max_new_tokens,
            corrector_length_ratio=self.corrector_length_ratio,
            corrector_stop_loops=self.corrector_stop_loops,
            corrector_max_question_tokens=self.corrector_max_question_tokens,
            corrector_max_answer_tokens=self.corrector_max_answer_tokens,
            alignment_timeout_s=self.alignment_timeout_s,
            max_batch_size=self.max_batch_size,
            batch_wait_ms=self.batch_wait_ms,
            cache_dir=self.cache_dir,
            dtype=self.dtype,
        )

    def routes(self) -> list[RouteSettings]:
        """The served models: the YAML list, or the one route built from the flat fields."""
        if self.models:
            return self.models
        return [RouteSettings(name=self.served_model_name, upstream=self.upstream, aligner=self.aligner)]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, env and an optional YAML file.

    ``config_file`` falls back to ``ALIGNER_CONFIG``; overrides whose value is
    ``None`` are ignored so CLI flags that were not given do not mask env vars.
    """
    path = config_file or os.environ.get("ALIGNER_CONFIG")
    given = {key: value for key, value in overrides.items() if value is not None}
    if path is None:
        return Settings(**given)
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=str(path))

    return FileSettings(**given)
