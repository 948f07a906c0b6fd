"""The ``python -m evals`` command: ``run`` a config, redraw a ``report``, ``list`` tasks and metrics.

Proposed console script: ``aligner-evals = "evals.cli:main"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markdown import Markdown
from rich.markup import escape

from evals.errors import EvalError

app = typer.Typer(
    help="Evaluate what an aligner-proxy configuration changes: harm, over-refusal, fidelity, latency.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", exists=True, dir_okay=False, help="eval config YAML")],
    output_dir: Annotated[Path | None, typer.Option(help="where the report goes (default from config)")] = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="run only these targets")] = None,
    start_proxy: Annotated[str | None, typer.Option(help="override proxy.start: never | auto | always")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="neither read nor write the answer cache")] = False,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNG plots")] = False,
    scorer: Annotated[
        str | None, typer.Option(help="override the unsafe-rate judge (answers come from the cache when there)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Send the config's tasks to its targets and write results.json, summary.md, samples.jsonl and plots."""
    from evals.config import EvalConfig
    from evals.report import metric_table, target_rows
    from evals.runner import run as run_eval

    _logging(verbose)
    try:
        cfg = EvalConfig.from_yaml(config, output_dir=str(output_dir) if output_dir else None)
        if start_proxy is not None:
            if start_proxy not in ("never", "auto", "always"):
                raise EvalError("--start-proxy must be never, auto or always")
            mode: Literal["never", "auto", "always"] = start_proxy  # type: ignore[assignment]
            cfg = cfg.model_copy(update={"proxy": cfg.proxy.model_copy(update={"start": mode})})
        if scorer is not None:
            cfg = cfg.model_copy(update={"scorer": scorer})
        report, files = run_eval(cfg, only_targets=target, use_cache=not no_cache, plots=not no_plots)
    except EvalError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    quality = [n for n, info in report.metrics.items() if info.kind != "latency" and info.unit != "tokens"]
    Console().print(Markdown("\n".join(metric_table(report, target_rows(report.targets), quality))))
    for kind, path in files.items():
        console.print(f"{kind}: {path}")
    if any(t.errors for t in report.targets):
        console.print("[yellow]some requests failed: see samples.jsonl[/yellow]")
        raise typer.Exit(1)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a results.json")],
    no_plots: Annotated[bool, typer.Option("--no-plots")] = False,
) -> None:
    """Redraw summary.md and the plots next to a saved results.json."""
    from evals.plots import draw_plots
    from evals.report import load_report, render_markdown

    saved = load_report(results)
    plots = [] if no_plots else draw_plots(saved, results.parent)
    out = results.parent / "summary.md"
    out.write_text(render_markdown(saved, [str(p) for p in plots]), encoding="utf-8")
    console.print(f"markdown: {out}")


@app.command("list")
def list_all() -> None:
    """The registered tasks, metrics and prompt formats."""
    from evals.loaders import LOADERS
    from evals.metrics import METRICS
    from evals.tasks import TASKS

    out = Console()
    out.print("[bold]tasks[/bold]")
    for name in TASKS.names():
        spec = TASKS.get(name)
        out.print(escape(f"  {name}: {spec.description} ({spec.path})"))
    out.print("[bold]metrics[/bold]")
    for name in METRICS.names():
        metric = METRICS.get(name)
        labels = "all prompts" if metric.labels is None else ", ".join(sorted(str(x) for x in metric.labels))
        out.print(escape(f"  {name} [{metric.kind}; {labels}]: {metric.description}"))
    out.print("[bold]formats[/bold]: " + ", ".join(LOADERS.names()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
