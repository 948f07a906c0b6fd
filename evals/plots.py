"""PNG plots of a report, with matplotlib's non-interactive Agg backend (no display needed).

- ``metrics.png``: one panel per quality metric, a bar per target, 95% intervals;
- ``latency.png``: p50 latency per target split into upstream / scorer / corrector, with total p50 and p95;
- ``sweep.png`` (with a threshold sweep): harm (unsafe rate) against over-refusal, one point per
  threshold coloured by fidelity, the configured targets as reference marks; and each of unsafe rate,
  over-refusal and fidelity against the threshold — to choose an operating point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.report import EvalReport, MetricInfo, SweepPoint, TargetResult

_COST_UNITS = ("ms", "tokens")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _value(target: TargetResult, name: str) -> float | None:
    result = target.metrics.get(name)
    return None if result is None else result.value


def _point_value(point: SweepPoint, name: str) -> float | None:
    result = point.metrics.get(name)
    return None if result is None else result.value


def _title(name: str, info: MetricInfo) -> str:
    arrow = {True: " (higher is better)", False: " (lower is better)"}.get(info.higher_is_better, "")  # type: ignore[arg-type]
    return name + arrow


def plot_metrics(report: EvalReport, path: Path) -> Path | None:
    names = [
        n
        for n, info in report.metrics.items()
        if info.kind != "latency"
        and info.unit not in _COST_UNITS
        and any(_value(t, n) is not None for t in report.targets)
    ]
    if not names:
        return None
    plt = _pyplot()
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    labels = [t.name for t in report.targets]
    for ax, name in zip(axes.flat, names, strict=False):
        values, low, high = [], [], []
        for t in report.targets:
            r = t.metrics.get(name)
            v = r.value if r is not None and r.value is not None else 0.0
            values.append(v)
            low.append(v - r.ci_low if r is not None and r.ci_low is not None else 0.0)
            high.append(r.ci_high - v if r is not None and r.ci_high is not None else 0.0)
        ax.bar(labels, values, yerr=[low, high], capsize=4, color=[f"C{i}" for i in range(len(labels))])
        ax.set_title(_title(name, report.metrics[name]), fontsize=9)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"{report.name}: metrics per target (bars: 95% bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_latency(report: EvalReport, path: Path) -> Path | None:
    stages = [
        ("latency_upstream_ms", "upstream"),
        ("latency_scorer_ms", "scorer"),
        ("latency_corrector_ms", "corrector"),
    ]
    if not any(_value(t, name) is not None for t in report.targets for name, _ in stages):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(report.targets) + 2), 3.6))
    labels = [t.name for t in report.targets]
    bottom = [0.0] * len(labels)
    for name, stage in stages:
        heights = [_value(t, name) or 0.0 for t in report.targets]
        ax.bar(labels, heights, bottom=bottom, label=f"{stage} p50")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    totals = [t.metrics.get("latency_total_ms") for t in report.targets]
    if any(r is not None and r.p50 is not None for r in totals):
        xs = range(len(labels))
        ax.scatter(xs, [r.p50 if r and r.p50 else 0 for r in totals], marker="_", s=600, c="k", label="total p50")
        ax.scatter(xs, [r.p95 if r and r.p95 else 0 for r in totals], marker="_", s=600, c="r", label="total p95")
    ax.set_ylabel("ms per request")
    ax.set_title(f"{report.name}: latency by stage", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(report: EvalReport, path: Path) -> Path | None:
    sweep = report.sweep
    if sweep is None or not sweep.points:
        return None
    harm, refuse = "unsafe_rate", "over_refusal_rate"
    fidelity = "identical_rate" if "identical_rate" in report.metrics else "chrf"
    points = [p for p in sweep.points if _point_value(p, harm) is not None and _point_value(p, refuse) is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [_point_value(p, refuse) for p in points]
    ys = [_point_value(p, harm) for p in points]
    colours = [_point_value(p, fidelity) or 0.0 for p in points]
    left.plot(xs, ys, color="0.7", zorder=1)
    dots = left.scatter(xs, ys, c=colours, cmap="viridis", zorder=2, s=50)
    fig.colorbar(dots, ax=left, label=fidelity)
    for p, x, y in zip(points, xs, ys, strict=True):
        left.annotate(f"{p.threshold:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    for i, t in enumerate(report.targets):
        x, y = _value(t, refuse), _value(t, harm)
        if x is not None and y is not None:
            left.scatter([x], [y], marker="s", s=60, color=f"C{i}", edgecolors="k", label=t.name, zorder=3)
    left.set_xlabel(f"{refuse} (benign prompts refused) ↓")
    left.set_ylabel(f"{harm} ↓")
    left.set_title(f"harm vs over-refusal across thresholds of {sweep.target}", fontsize=10)
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    thresholds = [p.threshold for p in sweep.points]
    for name in (harm, refuse, "identical_rate", "chrf"):
        if name not in report.metrics:
            continue
        scale = 100.0 if name == "chrf" else 1.0
        values = [_point_value(p, name) for p in sweep.points]
        label = f"{name} / 100" if scale != 1.0 else name
        right.plot(thresholds, [float("nan") if v is None else v / scale for v in values], marker="o", label=label)
    right.set_xlabel("threshold (cost above which the corrector runs)")
    right.set_ylabel("rate")
    right.set_title("operating point", fontsize=10)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_plots(report: EvalReport, out_dir: Path) -> list[Path]:
    """Every plot the report has data for, as PNG files in ``out_dir``."""
    drawn = [
        plot_metrics(report, out_dir / "metrics.png"),
        plot_latency(report, out_dir / "latency.png"),
        plot_sweep(report, out_dir / "sweep.png"),
    ]
    return [p for p in drawn if p is not None]
