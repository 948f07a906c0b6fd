"""The plumbing every script in ``training/`` shares: its CLI, its Trainer arguments, its log, its resume point.

Each trainer (corrector SFT, cost model, reward model, weak-to-strong, the RL
demos) is a ``*Config`` dataclass plus a ``main``; what they have in common
lives here so that a flag, a schedule or a log line means the same thing in
every one of them.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT")


def parse_config(config_cls: type[ConfigT], argv: Sequence[str] | None = None) -> ConfigT:
    """Build ``config_cls`` from ``--config file.yaml`` (optional) and ``--field value`` overrides.

    The YAML keys are the dataclass fields; flags on the command line win. An
    unknown YAML key is an error rather than a silently ignored typo.
    """
    import yaml
    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    parser = HfArgumentParser(config_cls)  # type: ignore[arg-type]
    parser.add_argument("--config", help="YAML file whose keys are the fields below; flags override it.")
    if known.config:
        values = yaml.safe_load(Path(known.config).read_text(encoding="utf-8")) or {}
        unknown = set(values) - {f.name for f in fields(config_cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"{known.config}: unknown {config_cls.__name__} fields {sorted(unknown)}")
        parser.set_defaults(**values)
    config, _namespace = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    return config  # type: ignore[no-any-return]


class ScheduleConfig(Protocol):
    """The fields a config needs for :func:`trainer_args`: batch, schedule, logging and seed."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    warmup_ratio: float
    num_train_epochs: float
    max_steps: int
    logging_steps: int
    save_steps: int
    seed: int

    @property
    def learning_rate(self) -> float | None: ...  # None: the caller passes ``learning_rate=`` in overrides


def trainer_args(config: ScheduleConfig, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for any ``TrainingArguments`` subclass (TRL's configs included).

    Warm-up then cosine decay, two checkpoints kept, no reporting integrations
    and no progress bars (runs log through :func:`attach_loss_logger`), CPU
    when no GPU is visible. ``overrides`` add or replace fields.
    """
    import torch

    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        lr_scheduler_type="cosine",
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        report_to=[],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    args.update(overrides)
    return args


def resolve_with_tokenizer(spec: str, cache_dir: Path) -> tuple[str, Any]:
    """The local path of model ``spec`` and its tokenizer, padding with EOS where it has no pad token.

    Batched training and generation need a pad token; SmolLM2-style
    checkpoints ship without one, and EOS is the usual stand-in.
    """
    from transformers import AutoTokenizer

    from aligner_proxy.core.models import resolve_model

    path = resolve_model(spec, cache_dir=cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return path, tokenizer


def latest_checkpoint(directory: Path) -> str | None:
    """The newest ``checkpoint-N`` directory under ``directory`` (to resume from), if any."""
    found = [p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None


def attach_loss_logger(trainer: Any) -> None:
    """Log step, loss, learning rate and an ETA through :mod:`logging` instead of the Trainer's prints.

    Runs go to a log file under ``nohup``, where progress bars and printed dicts
    are noise; one greppable line per logging step is what a reader wants.
    """
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    class _LossLogger(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started, self.first_step = time.perf_counter(), state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            logs = logs or {}
            done = state.global_step - self.first_step
            elapsed = time.perf_counter() - self.started
            eta = elapsed / done * (state.max_steps - state.global_step) if done else float("nan")
            shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()}
            logger.info(
                "step %d/%d %s elapsed %.0fs eta %.0fs", state.global_step, state.max_steps, shown, elapsed, eta
            )

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_LossLogger())
