"""The report of a run: ``results.json`` (every number), ``summary.md`` (tables), ``samples.jsonl``, PNG plots.

``results.json`` is an :class:`EvalReport`; the Markdown and the plots are
drawn from it alone, so they can be redrawn from a saved report
(``python -m evals report runs/evals/smoke/results.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from aligner_proxy.core.files import write_jsonl
from evals.overlap import OverlapReport
from evals.stats import MetricResult


class MetricInfo(BaseModel):
    description: str
    kind: str
    higher_is_better: bool | None
    labels: list[str | None] | None = Field(description="prompt labels it is reported on; None: every prompt")
    unit: str = ""


class TaskInfo(BaseModel):
    name: str
    description: str
    source: str
    n: int
    labels: dict[str, int]
    metrics: list[str]


class TargetResult(BaseModel):
    name: str
    base_url: str
    model: str
    aligner: dict[str, Any] | None
    n: int
    errors: int
    generated: int = Field(description="answers requested in this run (the rest came from the cache)")
    statuses: dict[str, int]
    metrics: dict[str, MetricResult]
    by_task: dict[str, dict[str, MetricResult]]


class SweepPoint(BaseModel):
    threshold: float
    target: str
    statuses: dict[str, int]
    metrics: dict[str, MetricResult]


class SweepResult(BaseModel):
    target: str
    points: list[SweepPoint]


class EvalReport(BaseModel):
    name: str
    created: str
    scorer: str
    unsafe_threshold: float
    reward_model: str | None = None
    judge: str | None = None
    tasks: list[TaskInfo]
    metrics: dict[str, MetricInfo]
    skipped_metrics: dict[str, str] = Field(default_factory=dict)
    overlap: OverlapReport = Field(default_factory=OverlapReport)
    targets: list[TargetResult]
    sweep: SweepResult | None = None
    cache: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="the eval config as run")


class SampleRow(BaseModel):
    """One line of ``samples.jsonl``: a target's answer to a prompt and its metric values."""

    target: str
    task: str
    prompt_id: str
    label: str | None
    prompt: str
    answer: str | None
    original: str | None
    status: str | None
    cost_before: float | None
    cost_after: float | None
    latency_ms: float | None
    error: str | None
    metrics: dict[str, float | None]


# ----------------------------------------------------------------- Markdown

_STATUSES = ("passed", "modified", "flagged", "blocked", "unchecked", "skipped")
_SWEEP_METRICS = ("unsafe_rate", "refusal_rate", "over_refusal_rate", "identical_rate", "chrf", "latency_total_ms")


def _is_cost(info: MetricInfo) -> bool:
    return info.kind == "latency" or info.unit == "tokens"


def _arrow(info: MetricInfo) -> str:
    return {True: " ↑", False: " ↓"}.get(info.higher_is_better, "")  # type: ignore[arg-type]


def format_result(result: MetricResult | None, info: MetricInfo) -> str:
    """A table cell: ``0.40 [0.20, 0.60]`` for a rate, ``810 / 1,530`` (p50 / p95) for a latency."""
    if result is None or result.value is None:
        return "–"
    if info.kind == "latency":
        return f"{result.p50:,.0f} / {result.p95:,.0f}"
    digits = 1 if info.kind == "mean" and (info.unit or abs(result.value) >= 10) else 2
    text = f"{result.value:.{digits}f}"
    if result.ci_low is not None and result.ci_high is not None and info.unit != "tokens":
        text += f" [{result.ci_low:.{digits}f}, {result.ci_high:.{digits}f}]"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def metric_table(
    report: EvalReport,
    rows: Sequence[tuple[str, dict[str, MetricResult]]],
    names: Sequence[str],
    first: str = "target",
) -> list[str]:
    """A Markdown table: one row per (label, metrics), one column per metric name."""
    header = [first, *(f"{name}{_arrow(report.metrics[name])}" for name in names)]
    cells = [[label, *(format_result(metrics.get(n), report.metrics[n]) for n in names)] for label, metrics in rows]
    return _table(header, cells)


def target_rows(targets: Sequence[TargetResult]) -> list[tuple[str, dict[str, MetricResult]]]:
    return [(t.name, t.metrics) for t in targets]


def render_markdown(report: EvalReport, plots: Sequence[str] = ()) -> str:
    quality = [n for n, info in report.metrics.items() if not _is_cost(info)]
    cost = [n for n, info in report.metrics.items() if _is_cost(info)]
    tasks = ", ".join(
        f"`{t.name}` ({t.n}: " + ", ".join(f"{k} {v}" for k, v in sorted(t.labels.items())) + ")" for t in report.tasks
    )
    lines = [
        f"# Eval report: {report.name}",
        "",
        f"{report.created}. Tasks: {tasks}. Unsafe = cost > {report.unsafe_threshold:g} by `{report.scorer}`."
        " Rates and means carry 95% bootstrap intervals; latencies are p50 / p95 in ms.",
        "",
        "## Safety, refusal and fidelity",
        "",
        *metric_table(report, target_rows(report.targets), quality),
        "",
        "## Cost per request",
        "",
        *metric_table(report, target_rows(report.targets), cost),
        "",
        "## What the proxy did",
        "",
        *_table(
            ["target", "aligner options", *_STATUSES, "errors", "new answers"],
            [
                [
                    t.name,
                    f"`{json.dumps(t.aligner)}`" if t.aligner else "(none: plain upstream)",
                    *(str(t.statuses.get(s, 0)) for s in _STATUSES),
                    str(t.errors),
                    str(t.generated),
                ]
                for t in report.targets
            ],
        ),
    ]
    if report.sweep is not None:
        names = [n for n in report.metrics if n in _SWEEP_METRICS]
        rows = [(f"{p.threshold:g}", p.metrics) for p in report.sweep.points]
        lines += ["", f"## Threshold sweep of `{report.sweep.target}`", ""]
        lines += metric_table(report, rows, names, first="threshold")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    notes = []
    for name, reason in report.skipped_metrics.items():
        notes.append(f"`{name}` not computed: {reason}.")
    for task, ids in report.overlap.overlaps.items():
        notes.append(f"**{len(ids)} prompts of `{task}` are in the training corpus**: {', '.join(ids[:20])}.")
    if report.overlap.missing_files:
        notes.append("Training corpus files not found (not checked): " + ", ".join(report.overlap.missing_files) + ".")
    if report.overlap.corpus_files and not report.overlap.overlaps:
        notes.append(f"No eval prompt is in the training corpus ({report.overlap.corpus_texts:,} texts checked).")
    errors = sum(t.errors for t in report.targets)
    if errors:
        notes.append(f"{errors} requests failed; see `samples.jsonl` (field `error`).")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    lines += ["", "## Metrics", ""]
    lines += [f"- `{name}`{_arrow(info)}: {info.description}." for name, info in report.metrics.items()]
    return "\n".join(lines) + "\n"


def write_report(
    report: EvalReport, rows: Sequence[SampleRow], out_dir: Path, *, plots: bool = True
) -> dict[str, Path]:
    """Write every file of the report into ``out_dir``; returns them by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"json": out_dir / "results.json", "samples": out_dir / "samples.jsonl"}
    files["json"].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    write_jsonl(files["samples"], rows)
    drawn: list[Path] = []
    if plots:
        from evals.plots import draw_plots

        drawn = draw_plots(report, out_dir)
        files.update({p.stem: p for p in drawn})
    files["markdown"] = out_dir / "summary.md"
    files["markdown"].write_text(render_markdown(report, [str(p) for p in drawn]), encoding="utf-8")
    return files


def load_report(path: Path) -> EvalReport:
    return EvalReport.model_validate_json(path.read_text(encoding="utf-8"))
