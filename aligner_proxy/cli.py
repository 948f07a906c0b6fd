"""The ``aligner-proxy`` command: ``serve`` the proxy, ``correct`` and ``score`` JSONL files.

Flags override ``ALIGNER_*`` env vars, which override the YAML ``--config``.
``correct`` and ``score`` run the same core as the proxy, in process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from aligner_proxy.settings import Settings, load_settings

app = typer.Typer(
    help="Inference-time alignment for any LLM: an OpenAI-compatible correcting proxy.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)

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
) -> None:
    """Start the proxy (default: embedded SmolLM2 upstream at 127.0.0.1:8000)."""
    import uvicorn

    from aligner_proxy.app import create_app

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
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower())


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                console.print(f"[red]error:[/red] {path}:{number}: not valid JSON ({exc.msg})")
                raise typer.Exit(2) from None
            if not isinstance(row, dict):
                console.print(f"[red]error:[/red] {path}:{number}: expected a JSON object")
                raise typer.Exit(2)
            rows.append(row)
    return rows


def _field(row: dict[str, Any], name: str, path: Path, number: int) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        console.print(f"[red]error:[/red] {path}:{number}: field '{name}' missing or not a string")
        raise typer.Exit(2)
    return value


@app.command()
def correct(
    input_path: Annotated[Path, typer.Option("--in", exists=True, dir_okay=False, help="JSONL with question/answer")],
    output_path: Annotated[Path, typer.Option("--out", help="JSONL written with correction and costs")],
    config: ConfigOpt = None,
    question_field: str = "question",
    answer_field: str = "answer",
    mode: Annotated[str, typer.Option(help="always | gated")] = "always",
    threshold: float = 0.0,
    batch_size: int = 8,
    corrector: CorrectorOpt = None,
    corrector_adapter: AdapterOpt = None,
    scorer: ScorerOpt = None,
) -> None:
    """Correct every (question, answer) row of a JSONL file with the in-process core."""
    from aligner_proxy.corrector import CorrectionInput
    from aligner_proxy.policy import PolicyConfig
    from aligner_proxy.runtime import load_pipeline

    if mode not in ("always", "gated"):
        console.print("[red]error:[/red] --mode must be 'always' or 'gated'")
        raise typer.Exit(2)
    rows = _read_jsonl(input_path)
    items = [
        CorrectionInput(
            question=_field(r, question_field, input_path, i), answer=_field(r, answer_field, input_path, i)
        )
        for i, r in enumerate(rows, 1)
    ]
    settings = _settings(config, corrector_model=corrector, corrector_adapter=corrector_adapter, scorer=scorer)
    pipeline = load_pipeline(settings)
    policy = PolicyConfig(mode=mode, threshold=threshold, failure_policy="fail_closed")  # type: ignore[arg-type]

    async def run() -> None:
        with output_path.open("w", encoding="utf-8") as out:
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                outcomes = await pipeline.align(batch, policy)
                for row, outcome in zip(rows[start : start + batch_size], outcomes, strict=True):
                    record = {
                        **row,
                        "correction": outcome.text,
                        "status": outcome.status,
                        "cost_before": outcome.cost_before,
                        "cost_after": outcome.cost_after,
                        "corrector": pipeline.corrector.model_id,
                        "scorer": pipeline.scorer.model_id,
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                console.print(f"{min(start + batch_size, len(items))}/{len(items)} rows")
        await pipeline.aclose()

    asyncio.run(run())


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
    from aligner_proxy.runtime import _Loader

    rows = _read_jsonl(input_path)
    prompts = [_field(r, prompt_field, input_path, i) for i, r in enumerate(rows, 1)]
    completions = [_field(r, completion_field, input_path, i) for i, r in enumerate(rows, 1)]
    settings = _settings(config, scorer=scorer)
    cost_scorer = _Loader(settings).scorer()
    costs = cost_scorer.score(prompts, completions)
    with output_path.open("w", encoding="utf-8") as out:
        for row, cost in zip(rows, costs, strict=True):
            out.write(json.dumps({**row, "cost": cost, "scorer": cost_scorer.model_id}, ensure_ascii=False) + "\n")
    console.print(f"scored {len(rows)} rows with {cost_scorer.model_id}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
