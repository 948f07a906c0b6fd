"""The model and LoRA arguments of every trainer, declared once, and the one place a ``LoraConfig`` is built.

TRL declares its model and LoRA arguments once (``ModelConfig``) and builds the
adapter config from them in one function (``get_peft_config``); the trainers
here do the same. A trainer's ``*Config`` inherits :class:`LoraArguments` when
it always trains an adapter (the cost model's LoRA design, weak-to-strong) or
:class:`ModelArguments` when it takes a base model and may train it in full
(corrector SFT, the reward model, the RL policies). The field names are the
YAML keys and CLI flags the configs in ``training/configs/`` already use.

A trainer whose defaults differ redeclares the field with its own default and
:func:`shared_help`: the corrector adapts the MLP too, the RL policies use a
smaller adapter without dropout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from aligner_proxy.core.models import DEFAULT_CACHE_DIR

if TYPE_CHECKING:
    from peft import LoraConfig

TaskType = Literal["CAUSAL_LM", "SEQ_CLS"]

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
"""The attention projections of Llama-style models (SmolLM2 included)."""
MLP_MODULES = ["gate_proj", "up_proj", "down_proj"]
"""The MLP projections of the same models."""


@dataclass
class LoraArguments:
    """The LoRA adapter a trainer puts on its base model (Hu et al. 2021: ``W + (alpha / r) · B A``)."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(ATTENTION_MODULES), metadata={"help": "Modules that get LoRA adapters."}
    )


@dataclass
class ModelArguments(LoraArguments):
    """The base model a trainer starts from, where it is cached, and whether it trains a LoRA adapter or all of it."""

    model: str = field(default="smollm2", metadata={"help": "Base model spec (alias, local dir or Hub id)."})
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "Model cache (converted SmolLM2)."})
    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (else the full model)."})


_SHARED = {f.name: f for f in fields(ModelArguments)}


def shared_help(name: str) -> Mapping[str, Any]:
    """The metadata (help) of the shared field ``name``, for a ``*Config`` that redeclares it with its own default."""
    return _SHARED[name].metadata


def lora_config(args: LoraArguments, task_type: TaskType, **extra: Any) -> LoraConfig:
    """The ``peft.LoraConfig`` that ``args`` describe; ``extra`` adds LoraConfig fields (``modules_to_save``...)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.lora_target_modules),
        **extra,
    )


def peft_config(args: ModelArguments, task_type: TaskType, **extra: Any) -> LoraConfig | None:
    """:func:`lora_config` when ``args.use_lora``, else ``None`` (full fine-tuning): TRL trainers' ``peft_config``."""
    return lora_config(args, task_type, **extra) if args.use_lora else None
