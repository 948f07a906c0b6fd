"""Learning curves as PNG: one panel per metric, one line per run, the cost limit dashed.

matplotlib is imported inside the function with the non-interactive ``Agg``
backend, so training and tests never need a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    metrics: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    limits: Mapping[str, float] | None = None,
    x_label: str = "iteration",
) -> Path:
    """Write ``path``: for each metric a panel with ``run -> [history rows]`` as lines (rows lacking it are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, rows in runs.items():
            points = [(i, float(r[metric])) for i, r in enumerate(rows) if metric in r and r[metric] is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1.4)
        if limits and metric in limits:
            ax.axhline(limits[metric], color="black", linestyle="--", linewidth=1.0, label="limit")
        ax.set_title(metric)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
