"""Tasks: a prompt set plus the metrics that apply to it, one YAML file each in this folder.

A task file is a :class:`TaskSpec`; its ``path`` is relative to the file. The
registry reads every ``*.yaml`` here on first lookup, so adding a benchmark is
adding a file. An eval config can also name a task file anywhere by path, or
write a task inline (its ``path`` then relative to the working directory)::

    tasks:
      - smoke_harmful                       # evals/tasks/smoke_harmful.yaml
      - my_tasks/red_team.yaml              # a file of your own
      - {name: my_mixed, path: /data/my_mixed.csv, prompt_field: prompt, label_field: label,
         label_map: {safe: benign, unsafe: harmful}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.errors import ConfigError
from evals.loaders import PACKAGE_PREFIX, EvalPrompt, Label, infer_format, load_prompts
from evals.registry import Registry

TASKS_DIR = Path(__file__).parent


class TaskSpec(BaseModel):
    """Where a task's prompts come from, how to read them, and which metrics to report on them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    path: str = Field(
        description="a CSV / JSONL / JSON / TXT file (may be .gz), a datasets id, or pkg:<package>/<file> "
        "for a file an installed package ships"
    )
    format: str | None = Field(None, description="csv | tsv | jsonl | json | txt | datasets; default: from the suffix")
    prompt_field: str = "prompt"
    label_field: str | None = Field("label", description="column holding harmful / benign; None: unlabelled")
    label: Label | None = Field(None, description="one label for every row (overrides label_field)")
    label_map: dict[str, Label] = Field(default_factory=dict, description="extra label values → harmful | benign")
    id_field: str | None = "id"
    json_key: str | None = Field(None, description="format json: the key holding the list of rows")
    subset: str | None = Field(None, description="format datasets: the configuration name")
    split: str = Field("train", description="format datasets: the split")
    data_files: str | list[str] | None = Field(None, description="format datasets: local data files")
    limit: int | None = Field(None, ge=1, description="use the first N prompts only")
    sample: int | None = Field(None, ge=1, description="use N prompts in a stable hash order (after the filters)")
    exclude: dict[str, list[str]] = Field(
        default_factory=dict, description="drop rows whose field holds one of these values (e.g. reserved sources)"
    )
    metadata_fields: list[str] | None = Field(None, description="row fields kept as metadata; None: every plain one")
    bucket: Literal["eval"] | None = Field(
        None, description="eval: keep only prompts in the evaluation bucket no training corpus uses"
    )
    metrics: list[str] | None = Field(None, description="metric names to report; None: every registered metric")
    system_prompt: str | None = Field(None, description="sent before each prompt; overrides the config's")

    @classmethod
    def from_yaml(cls, path: Path) -> TaskSpec:
        """Read a task file; a relative ``path`` inside it is taken relative to the file."""
        try:
            data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read task file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"task file {path}: expected a mapping")
        data.setdefault("name", path.stem)
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"task file {path}: {exc}") from None
        fmt = spec.format or infer_format(spec.path)
        if fmt != "datasets" and not spec.path.startswith(PACKAGE_PREFIX) and not Path(spec.path).is_absolute():
            spec = spec.model_copy(update={"path": str((path.parent / spec.path).resolve())})
        return spec

    def load(self) -> list[EvalPrompt]:
        return load_prompts(self)


def _discover_task_files(registry: Registry[TaskSpec]) -> None:
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        spec = TaskSpec.from_yaml(path)
        registry.register(spec.name, spec)


TASKS: Registry[TaskSpec] = Registry("task", _discover_task_files)


def resolve_task(ref: str | TaskSpec) -> TaskSpec:
    """A registered task name, a path to a task YAML file, or an inline spec."""
    if isinstance(ref, TaskSpec):
        return ref
    if ref.endswith((".yaml", ".yml")):
        return TaskSpec.from_yaml(Path(ref))
    return TASKS.get(ref)
