"""One eval run: prompts → targets → answers (cached) → metrics → report.

The steps, in order: load the tasks; warn about prompts that overlap the
training corpus; send every prompt to every target (the configured ones, then
the threshold sweep's), one target after another so their latencies do not
disturb each other, with ``generation.concurrency`` requests in flight so the
proxy can batch; score the answers with the metrics each task lists; reduce,
with bootstrap intervals; write the report (:mod:`evals.report`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.answers import CachedAnswer, Item, ItemAnswer, Task, chat_messages, originals, parse_answer
from evals.cache import JsonlCache, cache_key
from evals.client import ChatEndpoint, api_key_from_env
from evals.config import EvalConfig, TargetConfig
from evals.errors import ConfigError, TargetError
from evals.loaders import EvalPrompt
from evals.metrics import METRICS, Metric, MetricContext, Sample
from evals.overlap import check_overlap
from evals.replay import replayed
from evals.report import EvalReport, MetricInfo, SampleRow, SweepPoint, SweepResult, TargetResult, TaskInfo
from evals.stats import MetricResult, summarize
from evals.tasks import resolve_task

logger = logging.getLogger(__name__)


def load_tasks(config: EvalConfig) -> list[Task]:
    """The config's tasks with their prompts and the metrics to report on them (names checked here)."""
    tasks = []
    wanted = config.metrics
    for name in wanted or []:
        METRICS.get(name)
    for ref in config.tasks:
        spec = resolve_task(ref)
        names = spec.metrics if spec.metrics is not None else METRICS.names()
        for name in names:
            METRICS.get(name)
        metrics = [n for n in names if wanted is None or n in wanted]
        tasks.append(Task(spec=spec, prompts=spec.load(), metrics=metrics))
    seen = Counter(t.spec.name for t in tasks)
    if duplicated := [name for name, count in seen.items() if count > 1]:
        raise ConfigError(f"task names must be unique: {', '.join(duplicated)}")
    return tasks


def load_scorer(spec: str, *, max_length: int = 512) -> Any:
    """A judge for ``unsafe_rate`` or ``reward_delta``, named as the proxy names its gate.

    ``heuristic``, a shipped scorer (``cost-minilm-v1``), an embedding-head
    directory, or a one-logit classifier (path or hub id).
    """
    from aligner_proxy.core.loading import load_cost_scorer

    return load_cost_scorer(spec, max_length=max_length)


def request_body(
    config: EvalConfig, target: TargetConfig, model: str, task: Task, prompt: EvalPrompt
) -> dict[str, Any]:
    """The chat request for one prompt: generation defaults, the target's params, and its aligner options."""
    messages = [{"role": m.role, "content": m.content} for m in chat_messages(config, task, prompt)]
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": config.generation.max_tokens,
        "temperature": config.generation.temperature,
    }
    if config.generation.seed is not None:
        body["seed"] = config.generation.seed
    body.update(target.params)
    if (options := sent_options(target)) is not None:
        body["aligner"] = options
    return body


def sent_options(target: TargetConfig) -> dict[str, Any] | None:
    """The ``aligner`` field sent for ``target``: its options with ``return_original`` on, or none at all.

    Fidelity compares the final answer with the upstream's, so the original is always asked for.
    """
    if target.aligner is None:
        return None
    return target.aligner.model_copy(update={"return_original": True}).model_dump(exclude_none=True)


def to_sample(item: Item, answer: CachedAnswer) -> Sample:
    annotation = answer.aligner
    timings = annotation.timings if annotation else None
    return Sample(
        task=item.task.spec.name,
        prompt_id=item.prompt.id,
        prompt=item.prompt.prompt,
        label=item.prompt.label,
        answer=answer.answer,
        original=answer.original if answer.original is not None else answer.answer,
        status=annotation.status if annotation else None,
        cost_before=annotation.cost_before if annotation else None,
        cost_after=annotation.cost_after if annotation else None,
        total_ms=answer.latency_ms,
        upstream_ms=timings.upstream_ms if timings else answer.latency_ms,
        scorer_ms=timings.scorer_ms if timings else 0.0,
        corrector_ms=timings.corrector_ms if timings else 0.0,
        upstream_tokens=answer.total_tokens,
        corrector_tokens=annotation.corrector_usage.total_tokens if annotation else 0,
        metadata=dict(item.prompt.metadata),
    )


class Endpoints:
    """One :class:`ChatEndpoint` per (URL, key) and the model each URL serves by default."""

    def __init__(self, config: EvalConfig, proxy_url: str) -> None:
        self.config = config
        self.proxy_url = proxy_url
        self._endpoints: dict[tuple[str, str | None], ChatEndpoint] = {}
        self._default_models: dict[str, str] = {}

    def url(self, target: TargetConfig) -> str:
        return (target.base_url or self.proxy_url).rstrip("/")

    def get(self, target: TargetConfig) -> ChatEndpoint:
        key = (self.url(target), target.api_key_env)
        if key not in self._endpoints:
            g = self.config.generation
            self._endpoints[key] = ChatEndpoint(
                key[0],
                api_key=api_key_from_env(target.api_key_env),
                timeout_s=g.timeout_s,
                retries=g.retries,
                concurrency=g.concurrency,
            )
        return self._endpoints[key]

    async def model(self, target: TargetConfig) -> str:
        if target.model:
            return target.model
        url = self.url(target)
        if url not in self._default_models:
            models = await self.get(target).models()
            if not models:
                raise TargetError(f"{url}/models lists no model; set the target's model")
            self._default_models[url] = models[0]
        return self._default_models[url]

    async def aclose(self) -> None:
        for endpoint in self._endpoints.values():
            await endpoint.aclose()


async def generate(
    config: EvalConfig, target: TargetConfig, items: Sequence[Item], endpoints: Endpoints, cache: JsonlCache
) -> tuple[list[ItemAnswer], int]:
    """Every item's answer from ``target``, from the cache when it has it; returns them and how many were new."""
    endpoint = endpoints.get(target)
    model = await endpoints.model(target)
    slots = asyncio.Semaphore(config.generation.concurrency)
    generated = 0
    every = max(1, len(items) // 10)

    async def one(item: Item) -> ItemAnswer:
        nonlocal generated
        body = request_body(config, target, model, item.task, item.prompt)
        key = cache_key("chat", {"url": endpoint.base_url, "body": body, "salt": target.cache_salt})
        cached = cache.get(key)
        if cached is not None:
            return ItemAnswer(item, CachedAnswer.model_validate(cached))
        async with slots:
            try:
                data, latency_ms = await endpoint.chat(body)
                answer = parse_answer(data, latency_ms)
            except TargetError as exc:
                logger.warning("target %s, prompt %s: %s", target.name, item.prompt.id, exc)
                return ItemAnswer(item, None, str(exc))
        cache.put(key, answer.model_dump(mode="json"))
        generated += 1
        if generated % every == 0:
            logger.info("target %s: %d answers generated", target.name, generated)
        return ItemAnswer(item, answer)

    outcomes = list(await asyncio.gather(*(one(item) for item in items)))
    return outcomes, generated


async def score_target(
    outcomes: Sequence[ItemAnswer], metrics: Sequence[Metric], ctx: MetricContext, config: EvalConfig
) -> tuple[dict[str, MetricResult], dict[str, dict[str, MetricResult]], list[dict[str, float | None]]]:
    """Pooled and per-task results of each metric, and each sample's values (for ``samples.jsonl``)."""
    answered = [(i, o) for i, o in enumerate(outcomes) if o.answer is not None]
    samples = [to_sample(o.item, o.answer) for _, o in answered if o.answer is not None]
    per_sample: list[dict[str, float | None]] = [{} for _ in outcomes]
    pooled: dict[str, MetricResult] = {}
    by_task: dict[str, dict[str, MetricResult]] = {}
    b = config.bootstrap
    for metric in metrics:
        chosen = [
            (k, s)
            for k, s in enumerate(samples)
            if metric.name in answered[k][1].item.task.metrics and metric.applies_to(s)
        ]
        values = await metric.values([s for _, s in chosen], ctx)
        for (k, _), value in zip(chosen, values, strict=True):
            per_sample[answered[k][0]][metric.name] = value
        pooled[metric.name] = summarize(
            values, metric.kind, resamples=b.resamples, confidence=b.confidence, seed=b.seed
        )
        tasks = sorted({s.task for _, s in chosen})
        for task in tasks:
            task_values = [v for (_, s), v in zip(chosen, values, strict=True) if s.task == task]
            by_task.setdefault(task, {})[metric.name] = summarize(
                task_values, metric.kind, resamples=b.resamples, confidence=b.confidence, seed=b.seed
            )
    return pooled, by_task, per_sample


def _metrics_in_use(
    config: EvalConfig, tasks: Sequence[Task], ctx: MetricContext
) -> tuple[list[Metric], dict[str, str]]:
    """The metrics some task reports, in the config's order (else in order of first mention), and those skipped."""
    mentioned = list(dict.fromkeys(name for t in tasks for name in t.metrics))
    names = [n for n in config.metrics if n in mentioned] if config.metrics is not None else mentioned
    used, skipped = [], {}
    for name in names:
        metric = METRICS.get(name)
        if metric.requires == "reward_model" and ctx.reward_model is None:
            skipped[name] = "needs reward_model in the config"
        elif metric.requires == "judge" and ctx.judge is None:
            skipped[name] = "needs judge in the config"
        else:
            used.append(metric)
    return used, skipped


async def evaluate(
    config: EvalConfig,
    *,
    proxy_url: str,
    only_targets: Sequence[str] | None = None,
    use_cache: bool = True,
) -> tuple[EvalReport, list[SampleRow]]:
    """Run the whole eval against live endpoints; the caller writes the report (:func:`evals.report.write_report`)."""
    if only_targets is not None and (unknown := set(only_targets) - {t.name for t in config.targets}):
        raise ConfigError(f"unknown targets: {', '.join(sorted(unknown))}")
    targets = [t for t in config.targets if only_targets is None or t.name in only_targets]
    tasks = load_tasks(config)
    overlap = check_overlap(
        {t.spec.name: t.prompts for t in tasks}, [Path(p) for p in config.training_corpus], config.overlap_fields
    )
    sweep = (
        config.sweep_targets() if config.sweep and (only_targets is None or config.sweep.target in only_targets) else []
    )

    cache = JsonlCache(config.cache_path if use_cache else None)
    ctx = MetricContext(scorer=load_scorer(config.scorer), unsafe_threshold=config.unsafe_threshold)
    if config.reward_model is not None:
        ctx.reward_model = load_scorer(config.reward_model.model, max_length=config.reward_model.max_length)
        ctx.reward_sign = -1.0 if config.reward_model.output == "cost" else 1.0
    endpoints = Endpoints(config, proxy_url)
    judge_endpoint = None
    if config.judge is not None:
        from evals.judge import OpenAIJudge

        j = config.judge
        judge_endpoint = ChatEndpoint(
            j.base_url, api_key=api_key_from_env(j.api_key_env), timeout_s=j.timeout_s, concurrency=j.concurrency
        )
        ctx.judge = OpenAIJudge(
            judge_endpoint,
            j.model,
            template=j.template,
            max_tokens=j.max_tokens,
            concurrency=j.concurrency,
            cache=cache,
        )
    metrics, skipped = _metrics_in_use(config, tasks, ctx)
    items = [Item(task, prompt) for task in tasks for prompt in task.prompts]
    rows: list[SampleRow] = []
    results: dict[str, TargetResult] = {}
    answered: dict[str, list[ItemAnswer]] = {}
    derived = [t.source for t in targets if t.source]
    try:
        ordered = sorted(targets, key=lambda t: t.source is not None)  # sources before what derives from them
        for target in [*ordered, *(t for _, t in sweep)]:
            logger.info("target %s: %d prompts", target.name, len(items))
            if target.source:
                if target.source not in answered:  # only_targets left the source out
                    answered[target.source], _ = await generate(
                        config, _by_name(config, target.source), items, endpoints, cache
                    )
                if target.replay_of:
                    outcomes, generated = await replayed(config, target, answered[target.source], cache)
                else:
                    outcomes, generated = originals(answered[target.source]), 0
            else:
                outcomes, generated = await generate(config, target, items, endpoints, cache)
                if target.name in derived:
                    answered[target.name] = outcomes
            pooled, by_task, per_sample = await score_target(outcomes, metrics, ctx, config)
            results[target.name] = TargetResult(
                name=target.name,
                base_url=endpoints.url(target),
                model=await endpoints.model(target),
                aligner=sent_options(target),
                n=len(outcomes),
                errors=sum(o.answer is None for o in outcomes),
                generated=generated,
                statuses=dict(Counter(o.answer.aligner.status for o in outcomes if o.answer and o.answer.aligner)),
                metrics=pooled,
                by_task=by_task,
            )
            rows.extend(_rows(target.name, outcomes, per_sample))
    finally:
        await endpoints.aclose()
        if judge_endpoint is not None:
            await judge_endpoint.aclose()

    report = EvalReport(
        name=config.name,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        scorer=getattr(ctx.scorer, "model_id", config.scorer),
        unsafe_threshold=config.unsafe_threshold,
        reward_model=config.reward_model.model if config.reward_model else None,
        judge=config.judge.model if config.judge else None,
        tasks=[_task_info(t) for t in tasks],
        metrics={m.name: _metric_info(m) for m in metrics},
        skipped_metrics=skipped,
        overlap=overlap,
        targets=[results[t.name] for t in targets],
        sweep=(
            SweepResult(
                target=config.sweep.target,
                points=[
                    SweepPoint(
                        threshold=threshold,
                        target=t.name,
                        statuses=results[t.name].statuses,
                        metrics=results[t.name].metrics,
                    )
                    for threshold, t in sweep
                ],
            )
            if sweep and config.sweep
            else None
        ),
        cache=str(config.cache_path) if use_cache else None,
        config=config.model_dump(mode="json"),
    )
    return report, rows


def _by_name(config: EvalConfig, name: str) -> TargetConfig:
    return next(t for t in config.targets if t.name == name)


def _rows(target: str, outcomes: Sequence[ItemAnswer], values: Sequence[dict[str, float | None]]) -> list[SampleRow]:
    rows = []
    for outcome, metric_values in zip(outcomes, values, strict=True):
        answer, annotation = outcome.answer, outcome.answer.aligner if outcome.answer else None
        rows.append(
            SampleRow(
                target=target,
                task=outcome.item.task.spec.name,
                prompt_id=outcome.item.prompt.id,
                label=outcome.item.prompt.label,
                prompt=outcome.item.prompt.prompt,
                answer=answer.answer if answer else None,
                original=answer.original if answer else None,
                status=annotation.status if annotation else None,
                cost_before=annotation.cost_before if annotation else None,
                cost_after=annotation.cost_after if annotation else None,
                latency_ms=answer.latency_ms if answer else None,
                error=outcome.error,
                metrics=metric_values,
            )
        )
    return rows


def _task_info(task: Task) -> TaskInfo:
    labels = Counter(p.label or "unlabelled" for p in task.prompts)
    return TaskInfo(
        name=task.spec.name,
        description=task.spec.description,
        source=task.spec.path,
        n=len(task.prompts),
        labels=dict(labels),
        metrics=task.metrics,
    )


def _metric_info(metric: Metric) -> MetricInfo:
    return MetricInfo(
        description=metric.description,
        kind=metric.kind,
        higher_is_better=metric.higher_is_better,
        labels=None if metric.labels is None else sorted(metric.labels, key=lambda x: x or "unlabelled"),
        unit=metric.unit,
    )


def run(
    config: EvalConfig,
    *,
    only_targets: Sequence[str] | None = None,
    use_cache: bool = True,
    plots: bool = True,
) -> tuple[EvalReport, dict[str, Path]]:
    """The whole run, blocking: start or find the proxy when a target needs it, evaluate, write the report."""
    from evals.proxy import proxy_for_run
    from evals.report import write_report

    out_dir = config.output_path
    if any(t.base_url is None for t in config.targets):
        with proxy_for_run(config.proxy, out_dir / "proxy.log") as url:
            report, rows = asyncio.run(evaluate(config, proxy_url=url, only_targets=only_targets, use_cache=use_cache))
    else:
        report, rows = asyncio.run(
            evaluate(config, proxy_url=config.proxy.url, only_targets=only_targets, use_cache=use_cache)
        )
    return report, write_report(report, rows, out_dir, plots=plots)
