"""The eval config: one YAML file says which prompts go to which targets and how the answers are judged.

Every field is a pydantic model, so a typo fails at load with the field's
name. Relative paths are taken from the working directory (run from the repo
root), except a task file's own ``path``, which is relative to the task file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aligner_proxy.core.annotation import AlignerOptions
from evals.errors import ConfigError
from evals.tasks import TaskSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetConfig(_Strict):
    """One column of the comparison: an OpenAI-compatible endpoint, a model, and per-request options."""

    name: str = Field(min_length=1)
    base_url: str | None = Field(None, description="OpenAI-compatible base URL ending in /v1; None: proxy.url")
    model: str | None = Field(None, description="model name; None: the first one GET /models lists")
    api_key_env: str | None = Field(None, description="environment variable holding the bearer key")
    aligner: AlignerOptions | None = Field(
        None, description="per-request proxy options; None sends no 'aligner' field (a plain upstream)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="extra body fields, over `generation`")
    cache_salt: str = Field("", description="change it to regenerate this target (e.g. after changing the proxy)")
    replay_of: str | None = Field(
        None,
        description="no requests: the core runs in this process on another target's upstream answers (its "
        "`original`s) with this target's `core` models and `aligner` options (evals/replay.py)",
    )
    core: dict[str, Any] = Field(
        default_factory=dict, description="replay_of targets: CoreConfig fields (corrector_adapter, scorer, ...)"
    )
    originals_of: str | None = Field(
        None,
        description="no requests: this target's answers are another target's `original` (the upstream alone), "
        "so a baseline costs no second generation",
    )

    @property
    def source(self) -> str | None:
        """The target whose answers this one derives from, if it sends no requests of its own."""
        return self.originals_of or self.replay_of

    @property
    def asks_proxy(self) -> bool:
        """Whether this target's answers come from the proxy with annotations (what a derived target needs)."""
        return self.aligner is not None and self.source is None


class GenerationConfig(_Strict):
    """Request fields and client limits shared by every target."""

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = 0
    system_prompt: str | None = None
    concurrency: int = Field(8, ge=1, description="requests in flight per target (the proxy batches them)")
    timeout_s: float = Field(600.0, gt=0)
    retries: int = Field(2, ge=0, description="retries on connect errors, 429, 502, 503 and 504")


class ProxyConfig(_Strict):
    """The proxy that targets without a ``base_url`` talk to, and whether the harness starts it."""

    url: str = "http://127.0.0.1:8000/v1"
    start: Literal["never", "auto", "always"] = Field(
        "never",
        description="never: use the proxy at url; auto: use it if it answers /health, else start one; "
        "always: start one (aligner-proxy serve on url's host and port) and stop it afterwards",
    )
    config: str | None = Field(None, description="aligner-proxy YAML settings for a started proxy")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for a started proxy")
    ready_timeout_s: float = Field(1800.0, gt=0, description="how long a started proxy may take to load")


class SweepConfig(_Strict):
    """Run one target (usually gated) again at each threshold, to choose an operating point."""

    target: str = Field(description="name of the target whose aligner.threshold is varied")
    thresholds: list[float] = Field(min_length=1)


class RewardModelConfig(_Strict):
    model: str = Field(description="one-logit sequence classifier: path or hub id")
    output: Literal["reward", "cost"] = Field(
        "cost", description="what its logit is: training.reward_model saves -reward as a cost by default"
    )
    max_length: int = Field(512, ge=16)


class JudgeConfig(_Strict):
    """An LLM judge behind any OpenAI-compatible endpoint, comparing original and final answers pairwise."""

    base_url: str
    model: str
    api_key_env: str | None = None
    concurrency: int = Field(4, ge=1)
    max_tokens: int = Field(16, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    template: str | None = Field(None, description="judge prompt with {question}, {answer_a}, {answer_b}")


class BootstrapConfig(_Strict):
    resamples: int = Field(1000, ge=0, description="0 turns intervals off")
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0


class EvalConfig(_Strict):
    """Everything one ``python -m evals run`` does."""

    name: str = "eval"
    output_dir: str | None = Field(None, description="default runs/evals/<name>")
    cache: str | None = Field(None, description="answer cache JSONL; default <output_dir>/cache.jsonl")
    tasks: list[str | TaskSpec] = Field(min_length=1, description="task names, task YAML paths or inline specs")
    targets: list[TargetConfig] = Field(min_length=1)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    metrics: list[str] | None = Field(None, description="only these metrics; None: what each task lists")
    scorer: str = Field("heuristic", description="unsafe_rate's judge: 'heuristic', a shipped scorer, a classifier")
    unsafe_threshold: float = Field(0.0, description="cost above which an answer counts as unsafe")
    reward_model: RewardModelConfig | None = None
    judge: JudgeConfig | None = None
    sweep: SweepConfig | None = None
    training_corpus: list[str] = Field(
        default_factory=list, description="files whose prompts eval prompts should not repeat (overlap warning)"
    )
    overlap_fields: list[str] = Field(default_factory=lambda: ["question", "prompt", "instruction"])
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        names = [t.name for t in self.targets]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate target names: {names}")
        for t in self.targets:
            for field, name in (("originals_of", t.originals_of), ("replay_of", t.replay_of)):
                source = next((o for o in self.targets if o.name == name), None) if name else None
                if name and (source is None or not source.asks_proxy):
                    raise ValueError(f"target {t.name}: {field} must name a proxy target (with aligner options)")
            if t.originals_of and t.replay_of:
                raise ValueError(f"target {t.name}: originals_of and replay_of exclude each other")
            if t.core and not t.replay_of:
                raise ValueError(f"target {t.name}: core applies to replay_of targets only")
            if t.replay_of:
                from evals.replay import core_config

                core_config(t.core)
        if self.sweep is not None and self.sweep.target not in names:
            raise ValueError(f"sweep.target {self.sweep.target!r} is not a target ({', '.join(names)})")
        return self

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir or f"runs/evals/{self.name}")

    @property
    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache else self.output_path / "cache.jsonl"

    def sweep_targets(self) -> list[tuple[float, TargetConfig]]:
        """The sweep's targets: copies of ``sweep.target`` named ``<target>@<threshold>``."""
        if self.sweep is None:
            return []
        base = next(t for t in self.targets if t.name == self.sweep.target)
        options = base.aligner or AlignerOptions(mode="gated")
        return [
            (
                threshold,
                base.model_copy(
                    update={
                        "name": f"{base.name}@{threshold:g}",
                        "aligner": options.model_copy(update={"threshold": threshold}),
                    }
                ),
            )
            for threshold in self.sweep.thresholds
        ]

    @classmethod
    def from_yaml(cls, path: Path | str, **overrides: Any) -> EvalConfig:
        """Read a config file; ``overrides`` (CLI flags) replace top-level fields when not ``None``."""
        path = Path(path)
        try:
            data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read eval config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"eval config {path}: expected a mapping")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"eval config {path}: {exc}") from None
