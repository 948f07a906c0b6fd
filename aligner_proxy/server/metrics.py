"""Prometheus metrics of the proxy, on a registry owned by the app (not the global one),
so that several apps in one process — tests, embedded use — never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Requests, aligner statuses, stage latencies (upstream / scorer / corrector / total), tokens, LiteLLM
    guardrail checks by action, and the audit log's rows: written, dropped (a full queue, or the redaction
    hook), lost (a failed write, or still queued at shutdown), and queued now."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aligner_requests", "HTTP requests", ["endpoint", "status_code"], registry=self.registry
        )
        self.statuses = Counter(
            "aligner_answers", "answers by aligner status", ["model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "aligner_stage_seconds", "latency per stage", ["stage"], buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.tokens = Counter("aligner_tokens", "tokens by source and kind", ["source", "kind"], registry=self.registry)
        self.audit_written = Counter("aligner_audit_rows_written", "audit log rows stored", registry=self.registry)
        self.audit_dropped = Counter(
            "aligner_audit_rows_dropped", "audit log rows not stored, by reason", ["reason"], registry=self.registry
        )
        self.audit_lost = Counter(
            "aligner_audit_rows_lost", "audit log rows queued but never stored", ["reason"], registry=self.registry
        )
        self.audit_queued = Gauge(
            "aligner_audit_rows_queued", "audit log rows waiting to be written", registry=self.registry
        )
        self.guardrail_checks = Counter(
            "aligner_guardrail_checks",
            "LiteLLM guardrail checks by input type (request, response) and action",
            ["input_type", "action"],
            registry=self.registry,
        )

    def observe_ms(self, stage: str, ms: float) -> None:
        self.latency.labels(stage=stage).observe(ms / 1000.0)

    def count_tokens(self, source: str, prompt: int, completion: int) -> None:
        if prompt:
            self.tokens.labels(source=source, kind="prompt").inc(prompt)
        if completion:
            self.tokens.labels(source=source, kind="completion").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)
