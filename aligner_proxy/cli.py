"""The ``aligner-proxy`` command: ``serve`` the proxy, ``correct`` and ``score`` JSONL files, summarise an
``audit`` log, and write a ``review`` report of a batch output.

Flags override ``ALIGNER_*`` env vars, which override the YAML ``--config``.
``correct`` and ``score`` run the same core as the proxy, in process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from aligner_proxy.core.files import FileFormatError, iter_jsonl, write_jsonl
from aligner_proxy.server.settings import Settings, load_settings

app = typer.Typer(
    help="Inference-time alignment for any LLM: an OpenAI-compatible correcting proxy.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)
output = Console(soft_wrap=True)  # what a command prints as its result (stdout)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (also ALIGNER_CONFIG)")]
CorrectorOpt = Annotated[str | None, typer.Option(help="corrector model: path, hub id or 'smollm2'")]
AdapterOpt = Annotated[str | None, typer.Option(help="LoRA adapter directory for the corrector")]
ScorerOpt = Annotated[str | None, typer.Option(help="'heuristic' or a sequence-classification model")]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (ALIGNER_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (ALIGNER_PORT)")] = None,
    upstream_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible upstream base URL; default: embedded model")
    ] = None,
    upstream_model: Annotated[str | None, typer.Option(help="upstream model name (remote) or spec (embedded)")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="model name clients ask for")] = None,
    corrector: CorrectorOpt = None,
    corrector_adapter: AdapterOpt = None,
    scorer: ScorerOpt = None,
    mode: Annotated[str | None, typer.Option(help="off | always | gated")] = None,
    threshold: Annotated[float | None, typer.Option(help="cost threshold for gated mode and block")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="server processes; each loads its own models (use >1 with remote models)")
    ] = 1,
) -> None:
    """Start the proxy (default: embedded SmolLM2 upstream at 127.0.0.1:8000)."""
    import uvicorn

    from aligner_proxy.server.app import create_app

    upstream = {k: v for k, v in {"base_url": upstream_url, "model": upstream_model}.items() if v is not None}
    aligner = {k: v for k, v in {"mode": mode, "threshold": threshold}.items() if v is not None}
    settings = _settings(
        config,
        host=host,
        port=port,
        served_model_name=served_model_name,
        corrector_model=corrector,
        corrector_adapter=corrector_adapter,
        scorer=scorer,
        log_level=log_level,
        upstream=upstream or None,
        aligner=aligner or None,
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.print(
        f"aligner-proxy on http://{settings.host}:{settings.port}/v1 "
        f"(models: {', '.join(r.name for r in settings.routes())}; loading, see /ready)"
    )
    if workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())
        return
    from aligner_proxy.server.app import SETTINGS_ENV, settings_json

    # Each worker process builds its app from these settings (CLI flags included), passed down in the
    # environment: uvicorn starts workers from an import string, not from an object.
    os.environ[SETTINGS_ENV] = settings_json(settings)
    uvicorn.run(
        "aligner_proxy.server.app:app_from_environment",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a JSONL file with their line numbers; a bad line ends the command naming it."""
    try:
        rows = list(iter_jsonl(path))
    except FileFormatError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for number, row in rows:
        if not isinstance(row, dict):
            console.print(f"[red]error:[/red] {path}:{number}: expected a JSON object")
            raise typer.Exit(2)
    return rows


def _field(row: dict[str, Any], name: str, path: Path, number: int) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        console.print(f"[red]error:[/red] {path}:{number}: field '{name}' missing or not a string")
        raise typer.Exit(2)
    return value


def _default(name: str) -> Any:
    """A :class:`BatchConfig` field's default, so the CLI and the Python API cannot drift apart."""
    from dataclasses import MISSING, fields

    from aligner_proxy.batch.config import BatchConfig

    found = next(f for f in fields(BatchConfig) if f.name == name)
    return None if found.default is MISSING else found.default


def _batch_help(name: str) -> str:
    from aligner_proxy.batch.config import help_text

    return help_text(name)


@app.command()
def correct(
    input_path: Annotated[str, typer.Option("--in", help=_batch_help("input_path"))],
    output_path: Annotated[str, typer.Option("--out", help=_batch_help("output_path"))],
    config: ConfigOpt = None,
    parquet_out: Annotated[str | None, typer.Option(help=_batch_help("parquet_path"))] = None,
    split: Annotated[str, typer.Option(help=_batch_help("split"))] = _default("split"),
    question_field: Annotated[str, typer.Option(help=_batch_help("question_field"))] = _default("question_field"),
    answer_field: Annotated[str, typer.Option(help=_batch_help("answer_field"))] = _default("answer_field"),
    messages_field: Annotated[str, typer.Option(help=_batch_help("messages_field"))] = _default("messages_field"),
    id_field: Annotated[str | None, typer.Option(help=_batch_help("id_field"))] = None,
    mode: Annotated[str, typer.Option(help=_batch_help("mode"))] = _default("mode"),
    threshold: Annotated[float | None, typer.Option(help=_batch_help("threshold"))] = None,
    limit: Annotated[int | None, typer.Option(help=_batch_help("limit"))] = None,
    batch_size: Annotated[int, typer.Option(help=_batch_help("batch_size"))] = _default("batch_size"),
    concurrency: Annotated[int, typer.Option(help=_batch_help("concurrency"))] = _default("concurrency"),
    backend: Annotated[str, typer.Option(help=_batch_help("backend"))] = _default("backend"),
    url: Annotated[str | None, typer.Option(help=_batch_help("url"))] = None,
    remote_model: Annotated[str | None, typer.Option(help=_batch_help("remote_model"))] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="ALIGNER_BATCH_API_KEY", help=_batch_help("api_key"), show_default=False)
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help=_batch_help("max_new_tokens"))] = None,
    temperature: Annotated[float, typer.Option(help=_batch_help("temperature"))] = _default("temperature"),
    seed: Annotated[int | None, typer.Option(help=_batch_help("seed"))] = _default("seed"),
    retry_failed: Annotated[bool, typer.Option(help=_batch_help("retry_failed"))] = _default("retry_failed"),
    fsync: Annotated[bool, typer.Option(help=_batch_help("fsync"))] = _default("fsync"),
    engine: Annotated[str, typer.Option(help=_batch_help("engine"))] = _default("engine"),
    ray_address: Annotated[str | None, typer.Option(help=_batch_help("ray_address"))] = None,
    num_actors: Annotated[int, typer.Option(help=_batch_help("num_actors"))] = _default("num_actors"),
    shard_rows: Annotated[int, typer.Option(help=_batch_help("shard_rows"))] = _default("shard_rows"),
    cpus_per_actor: Annotated[float, typer.Option(help=_batch_help("cpus_per_actor"))] = _default("cpus_per_actor"),
    gpus_per_actor: Annotated[float | None, typer.Option(help=_batch_help("gpus_per_actor"))] = None,
    corrector: CorrectorOpt = None,
    corrector_adapter: AdapterOpt = None,
    scorer: ScorerOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "warning",
) -> None:
    """Correct every row of a file (resumable: re-run the same command to finish an interrupted run)."""
    from aligner_proxy.batch import BatchConfig, OutputLockedError, correct_file
    from aligner_proxy.core.backends import BackendError
    from aligner_proxy.core.errors import ModelNotFoundError

    _log_to_console(log_level)
    try:
        batch = BatchConfig(
            input_path=input_path,
            output_path=output_path,
            parquet_path=parquet_out,
            split=split,
            question_field=question_field,
            answer_field=answer_field,
            messages_field=messages_field,
            id_field=id_field,
            mode=mode,  # type: ignore[arg-type]  # validated by BatchConfig
            threshold=threshold,
            limit=limit,
            batch_size=batch_size,
            concurrency=concurrency,
            backend=backend,  # type: ignore[arg-type]
            url=url,
            remote_model=remote_model,
            api_key=api_key,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            retry_failed=retry_failed,
            fsync=fsync,
            engine=engine,  # type: ignore[arg-type]
            ray_address=ray_address,
            num_actors=num_actors,
            shard_rows=shard_rows,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc} (see --mode / --backend / --engine / --url)")
        raise typer.Exit(2) from None
    settings = _settings(config, corrector_model=corrector, corrector_adapter=corrector_adapter, scorer=scorer)
    progress, on_progress = _progress_bar()
    try:
        with progress:
            stats = correct_file(batch, core=settings.core_config(), progress=on_progress)
    except (FileNotFoundError, ModelNotFoundError, OutputLockedError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (ValueError, BackendError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: re-run the same command to finish {output_path}")
        raise typer.Exit(130) from None
    rate = stats.processed / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    colour = "yellow" if stats.failed else "green"
    console.print(
        f"[{colour}]done {stats.done}, skipped {stats.skipped}, failed {stats.failed}[/{colour}]"
        + (f", duplicate ids {stats.duplicates}" if stats.duplicates else "")
        + f" in {stats.elapsed_s:.1f} s ({rate:.2f} rows/s) -> {output_path}"
        + (f" and {parquet_out}" if parquet_out else "")
    )


def _log_to_console(level: str) -> None:
    """Route library logs through rich so they print above the progress bar instead of through it."""
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, show_time=False)
    logging.basicConfig(level=level.upper(), format="%(name)s: %(message)s", handlers=[handler], force=True)


def _progress_bar() -> tuple[Any, Any]:
    """A rich progress bar (rows, rows/s, tokens/s, ETA) and the callback that feeds it from RunStats."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]correcting[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows_s]:.2f} rows/s"),
        TextColumn("{task.fields[tokens_s]:.1f} tok/s"),
        TextColumn("{task.fields[failed]} failed"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("correct", total=None, rows_s=0.0, tokens_s=0.0, failed=0)

    def update(stats: Any) -> None:
        elapsed = max(stats.elapsed_s, 1e-9)
        progress.update(
            task,
            total=stats.total,
            completed=stats.processed,
            rows_s=stats.processed / elapsed,
            tokens_s=stats.tokens / elapsed,
            failed=stats.failed,
        )

    return progress, update


@app.command()
def score(
    input_path: Annotated[Path, typer.Option("--in", exists=True, dir_okay=False, help="JSONL with prompt/completion")],
    output_path: Annotated[Path, typer.Option("--out", help="JSONL written with a cost per row")],
    config: ConfigOpt = None,
    prompt_field: str = "question",
    completion_field: str = "answer",
    scorer: ScorerOpt = None,
) -> None:
    """Score every row of a JSONL file with the cost scorer (higher = more unsafe)."""
    from aligner_proxy.core.loading import load_cost_scorer

    rows = _read_jsonl(input_path)
    prompts = [_field(r, prompt_field, input_path, n) for n, r in rows]
    completions = [_field(r, completion_field, input_path, n) for n, r in rows]
    settings = _settings(config, scorer=scorer)
    cost_scorer = load_cost_scorer(settings.scorer, cache_dir=settings.cache_dir, dtype=settings.scorer_dtype)
    costs = cost_scorer.score(prompts, completions)
    scored = ({**row, "cost": cost, "scorer": cost_scorer.model_id} for (_, row), cost in zip(rows, costs, strict=True))
    write_jsonl(output_path, scored)
    console.print(f"scored {len(rows)} rows with {cost_scorer.model_id}")


@app.command()
def audit(
    path: Annotated[Path, typer.Argument(help="the audit log (the proxy's ALIGNER_AUDIT_LOG)")],
    export: Annotated[Path | None, typer.Option("--export", help="write its rows here as JSONL, oldest first")] = None,
    status: Annotated[str | None, typer.Option(help="export only the rows of this status")] = None,
    top: Annotated[int, typer.Option(min=0, help="how many of the most often flagged questions to list")] = 10,
) -> None:
    """Summarise an audit log: rows by status and the questions whose answers were flagged most often."""
    import sqlite3
    from datetime import datetime

    from rich.table import Table

    from aligner_proxy.core.audit import FLAGGED_STATUSES, AuditStore, AuditStoreError

    try:
        store = AuditStore.open_readonly(path)
        try:
            summary = store.summary(top=top)
            exported = write_jsonl(export, store.iter_all(status=status)) if export else None
        finally:
            store.close()
    except AuditStoreError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except sqlite3.DatabaseError as exc:
        console.print(f"[red]error:[/red] {path}: the audit log cannot be read (damaged?): {exc}")
        raise typer.Exit(2) from None
    span = ""
    if summary.first is not None and summary.last is not None:
        first, last = (datetime.fromtimestamp(t).isoformat(" ", "seconds") for t in (summary.first, summary.last))
        span = f", {first} to {last}"
    output.print(f"{path}: {summary.rows} rows{span}")
    by_status = Table("status", "rows", "share")
    for name, count in summary.by_status.items():
        by_status.add_row(name, str(count), f"{count / summary.rows:.1%}")
    output.print(by_status)
    if summary.top_flagged:
        flagged = Table("flagged", "question", title=f"top flagged questions ({', '.join(FLAGGED_STATUSES)})")
        for question, count in summary.top_flagged:
            flagged.add_row(str(count), question if len(question) <= 200 else question[:200] + "...")
        output.print(flagged)
    if export is not None:
        output.print(f"exported {exported} rows to {export}")


@app.command()
def review(
    input_path: Annotated[Path, typer.Argument(help="a batch output: aligner-proxy correct --out FILE")],
    output_path: Annotated[Path, typer.Option("--out", help="the HTML report to write")],
    question_field: Annotated[str, typer.Option(help=_batch_help("question_field"))] = _default("question_field"),
    answer_field: Annotated[str, typer.Option(help=_batch_help("answer_field"))] = _default("answer_field"),
    messages_field: Annotated[str, typer.Option(help=_batch_help("messages_field"))] = _default("messages_field"),
) -> None:
    """Write a batch output as one self-contained HTML page: each answer beside its correction, word-level
    diff, costs and status, filterable by status."""
    from aligner_proxy.batch.correct import RowMapping
    from aligner_proxy.batch.review import review_rows
    from aligner_proxy.review.page import render_report

    if not input_path.is_file():
        console.print(f"[red]error:[/red] {input_path}: no such file")
        raise typer.Exit(2)
    records = [row for _, row in _read_jsonl(input_path)]
    mapping = RowMapping(question_field=question_field, answer_field=answer_field, messages_field=messages_field)
    try:
        rows = review_rows(records, mapping)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {input_path}: {exc}")
        raise typer.Exit(2) from None
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(render_report(rows, title=input_path.name), encoding="utf-8")
    output.print(f"{len(rows)} rows -> {output_path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
