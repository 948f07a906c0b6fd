"""Package a trained corrector adapter (a finished run or one of its checkpoints) for shipping.

Copies the LoRA adapter into a directory (by default the package's shipped
``aligner_proxy/weights/aligner-smollm2-lora-v1``), casts it to a smaller
dtype, and writes its model card: base model, data sources with licences, the
recipe, the cost read from the trainer state, and validation metrics from
``training.eval_corrector`` when given. A checkpoint is a legitimate thing to
ship when a run has to stop early; the card then says at which step.

    python -m training.ship_corrector --run_config training/configs/corrector.yaml \\
        --source runs/corrector/checkpoints/checkpoint-125 --eval_file runs/corrector_eval.json
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aligner_proxy.weights import CORRECTOR, WEIGHTS_DIR

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class ShipCorrectorConfig:
    run_config: str = field(
        default="training/configs/corrector.yaml", metadata={"help": "The CorrectorSFTConfig YAML of the run."}
    )
    source: str = field(default="runs/corrector", metadata={"help": "Run output dir or one of its checkpoints."})
    destination: str = field(default=str(WEIGHTS_DIR / CORRECTOR), metadata={"help": "Where the adapter goes."})
    eval_file: str | None = field(default=None, metadata={"help": "JSON written by training.eval_corrector."})
    dtype: str = field(default="bfloat16", metadata={"help": "Dtype of the shipped adapter weights."})
    wall_seconds: float = field(
        default=0.0, metadata={"help": "Training wall time up to the shipped step (the trainer log's 'elapsed')."}
    )


def _trainer_state(source: Path) -> dict[str, Any]:
    state = source / "trainer_state.json"
    return json.loads(state.read_text()) if state.is_file() else {}


def _eval_tables(eval_file: str | None) -> dict[str, dict[str, Any]]:
    if not eval_file:
        return {}
    report = json.loads(Path(eval_file).read_text())
    tables: dict[str, dict[str, Any]] = {}
    for name, entry in report["correctors"].items():
        for group, metrics in entry["metrics"].items():
            if isinstance(metrics, dict):
                tables[f"{name} corrector: {group}"] = metrics
    return tables


def ship(config: ShipCorrectorConfig) -> Path:
    from aligner_proxy.core.files import read_jsonl_models
    from training.cards import TrainingCost, write_model_card
    from training.data.records import CorrectionTriple
    from training.sft import CorrectorSFTConfig, _cast_adapter, build_curriculum, prompter
    from training.trainers import parse_config

    run = parse_config(CorrectorSFTConfig, ["--config", config.run_config])
    source, destination = Path(config.source), Path(config.destination)
    missing = [name for name in ADAPTER_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} has no {', '.join(missing)}: not a LoRA adapter directory")
    destination.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(source / name, destination / name)
    _cast_adapter(destination, config.dtype)

    state = _trainer_state(source)
    steps = int(state.get("global_step", 0))
    history = state.get("log_history", [])
    losses = [entry["loss"] for entry in history if "loss" in entry]
    planned = state.get("max_steps", steps)
    # The curriculum's sources, rebuilt from the run config (tokenizer only, no model).
    from transformers import AutoTokenizer

    from aligner_proxy.core.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(run.model, cache_dir=Path(run.cache_dir)))
    curriculum = build_curriculum(run, read_jsonl_models(run.train_file, CorrectionTriple), prompter(run, tokenizer))
    seen = steps * run.per_device_train_batch_size
    wall = float(state.get("train_runtime", 0.0)) or config.wall_seconds
    metrics: dict[str, dict[str, Any]] = {
        "training": {
            "steps_trained": steps,
            "steps_planned": planned,
            "rows_seen": seen,
            "final_logged_loss": losses[-1] if losses else float("nan"),
        }
    }
    metrics.update(_eval_tables(config.eval_file))
    write_model_card(
        destination,
        title=f"{destination.name}: LoRA Aligner corrector on SmolLM2-135M-Instruct",
        base_model=f"{run.model} (SmolLM2-135M-Instruct) + LoRA r={run.lora_r}",
        sources=curriculum.sources,
        recipe=asdict(run) | {"shipped_from": str(source), "shipped_dtype": config.dtype},
        cost=TrainingCost.measure(wall_seconds=wall, steps=steps),
        metrics=metrics,
    )
    logger.info("shipped %s (step %d of %d) to %s", source, steps, planned, destination)
    return destination


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ship(parse_config(ShipCorrectorConfig, argv))


if __name__ == "__main__":
    main()
