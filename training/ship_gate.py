"""Ship a trained gate: copy the run's artefacts into the package and write one card with every comparison.

A gate run (:mod:`training.gate`) measures itself beside the old gate and the
keyword heuristic on its validation split; held-out runs (the same recipe with
one source group left out) measure whether what it learned carries to a data
set or an answering model it never saw. This module gathers the main run and
any held-out runs into two tables (in distribution, and one row per held-out
group) and writes them, with the generated card of the main run, as the
shipped model's ``README.md``.

    python -m training.ship_gate --source runs/gate --holdout_runs runs/gate_ho_pku runs/gate_ho_dna \\
        --destination aligner_proxy/weights/cost-minilm-ft-v2
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aligner_proxy.core.backends.embedding import ENCODER_WEIGHTS, HEAD_CONFIG, HEAD_WEIGHTS
from training.gate_metrics import percent

logger = logging.getLogger(__name__)

FILES = (HEAD_WEIGHTS, HEAD_CONFIG, ENCODER_WEIGHTS, "metrics.json", "training.json")
COLUMNS = ("auroc", "recall_at_5pct_fpr", "recall_at_threshold", "fpr_at_threshold")


@dataclass
class ShipGateConfig:
    source: str = field(default="runs/gate", metadata={"help": "The main gate run's output_dir."})
    destination: str = field(
        default="aligner_proxy/weights/cost-minilm-ft-v2", metadata={"help": "Where the shipped gate goes."}
    )
    holdout_runs: list[str] = field(default_factory=list, metadata={"help": "Output dirs of held-out runs."})
    name: str = field(default="cost-minilm-ft-v2", metadata={"help": "The shipped name (title of the card)."})


def _cell(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    if value is None or value != value:  # missing or NaN
        return "–"
    return f"{value:.3f}"


def comparison_rows(metrics: dict[str, Any], set_name: str, label: str, gate_name: str = "**this gate**") -> list[str]:
    """One Markdown row per scorer for ``set_name`` (``validation`` or ``held_out``) of one run's metrics."""
    rows = []
    for scorer, sets in metrics["scorers"].items():
        table = sets.get(set_name, {}).get("all")
        if table is None:
            continue
        name = gate_name if scorer == "gate" else f"`{scorer}`"
        cells = " | ".join(_cell(table, key) for key in COLUMNS)
        rows.append(f"| {label} | {name} | {table['n']} ({table['n_unsafe']} unsafe) | {cells} |")
    return rows


def render_tables(main: dict[str, Any], holdouts: dict[str, dict[str, Any]]) -> str:
    header = (
        "| rows | scorer | n | AUROC | recall at 5 % FPR | recall at its threshold | FPR at its threshold |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = [
        "## How it compares",
        "",
        f"Each scorer at its own threshold (this gate: {main['threshold']:.3f}, which "
        + main.get(
            "threshold_note", f"flags at most {percent(main['target_fpr'])} of the validation split's safe answers"
        )
        + "; `cost-minilm-v1` and the heuristic: 0). *Recall at 5 % FPR* picks the threshold on the rows "
        "themselves, so it is each scorer's best case at that false-positive rate. Scoring: "
        f"{main['ms_per_item']:.1f} ms per item on this machine's CPU (batch 64).",
        "",
        "### Validation split (questions never trained on)",
        "",
        header,
        *comparison_rows(main, "validation", "all sources"),
    ]
    for source in sorted(main["scorers"]["gate"]["validation"]):
        if source == "all":
            continue
        for scorer, sets in main["scorers"].items():
            table = sets["validation"].get(source)
            if table is not None:
                name = "**this gate**" if scorer == "gate" else f"`{scorer}`"
                cells = " | ".join(_cell(table, key) for key in COLUMNS)
                lines.append(f"| {source} | {name} | {table['n']} ({table['n_unsafe']} unsafe) | {cells} |")
    if holdouts:
        lines += [
            "",
            "### Held-out sources",
            "",
            "A gate trained with the same recipe *without* the group (its training items capped as the run's "
            "`training.json` says), scored on a stable sample of the group's rows that it never saw. The baselines "
            "are scored on the same rows, but they were not retrained, so a row is in distribution for any "
            "baseline trained on that group: `cost-minilm-v1` on PKU-SafeRLHF and Do-Not-Answer, "
            "`cost-minilm-ft-v2` on all three. Only the heuristic is out of distribution everywhere.",
            "",
            header,
        ]
        for group, metrics in holdouts.items():
            lines += comparison_rows(metrics, "held_out", f"held out: {group}", "**recipe without the group**")
    return "\n".join(lines) + "\n"


def ship(config: ShipGateConfig) -> Path:
    source, destination = Path(config.source), Path(config.destination)
    missing = [name for name in FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: not a finished gate run")
    destination.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(source / name, destination / name)
    main = json.loads((source / "metrics.json").read_text())
    holdouts = {}
    for run in config.holdout_runs:
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        holdouts[", ".join(metrics["held_out_sources"])] = metrics
    card = (source / "README.md").read_text()
    title, _, rest = card.partition("\n")
    (destination / "README.md").write_text(
        f"# {config.name}: {title.removeprefix('# ')}\n\n{render_tables(main, holdouts)}\n{rest.lstrip()}"
    )
    (destination / "holdout_metrics.json").write_text(json.dumps(holdouts, indent=2) + "\n")
    return destination


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.info("shipped to %s", ship(parse_config(ShipGateConfig, argv)))


if __name__ == "__main__":
    main()
