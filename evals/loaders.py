"""Prompt-set loaders: CSV, JSONL, JSON, plain text and Hugging Face ``datasets``, by format name.

A loader turns a file (or a ``datasets`` id) into rows, plain ``dict``\\ s;
:func:`load_prompts` then picks the prompt column and the optional label
column a :class:`~evals.tasks.TaskSpec` names, and maps label values onto
``harmful`` / ``benign``. Public benchmarks are used in place, by path or id:
the project ships only its own small smoke sets.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aligner_proxy.core.files import FileFormatError, iter_jsonl, open_text
from evals.errors import ConfigError
from evals.registry import Registry

if TYPE_CHECKING:
    from evals.tasks import TaskSpec

Label = Literal["harmful", "benign"]

DEFAULT_LABEL_MAP: dict[str, Label] = {
    **dict.fromkeys(("harmful", "unsafe", "1", "true", "yes", "toxic", "attack"), "harmful"),
    **dict.fromkeys(("benign", "safe", "harmless", "0", "false", "no", "contrast"), "benign"),
}
"""Label values (compared lower-cased, stripped) that mean harmful or benign unless a task maps its own."""


class EvalPrompt(BaseModel):
    """One prompt of a task. ``label`` is ``None`` when the set says nothing about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    prompt: str = Field(min_length=1)
    label: Label | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


Rows = list[dict[str, Any]]
Loader = Callable[["TaskSpec"], Rows]

LOADERS: Registry[Loader] = Registry("format")


def loader(name: str) -> Callable[[Loader], Loader]:
    """Register a format: ``@loader("parquet")`` on a function from a task spec to rows."""

    def wrap(fn: Loader) -> Loader:
        return LOADERS.register(name, fn)

    return wrap


def _prompt_file(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"prompt file not found: {path}")
    return path


def _open_text(path: Path) -> IO[str]:
    return open_text(_prompt_file(path))


def infer_format(path: str) -> str:
    """The format a path's suffix implies (``.jsonl.gz`` → ``jsonl``); anything else is a ``datasets`` id."""
    suffixes = [s for s in Path(path).suffixes if s != ".gz"]
    suffix = suffixes[-1].lstrip(".").lower() if suffixes else ""
    return {"jsonl": "jsonl", "ndjson": "jsonl", "json": "json", "csv": "csv", "tsv": "tsv", "txt": "txt"}.get(
        suffix, "datasets"
    )


@loader("jsonl")
def read_jsonl(spec: TaskSpec) -> Rows:
    try:
        return [
            row if isinstance(row, dict) else {"prompt": row} for _, row in iter_jsonl(_prompt_file(Path(spec.path)))
        ]
    except FileFormatError as exc:
        raise ConfigError(str(exc)) from None


@loader("json")
def read_json(spec: TaskSpec) -> Rows:
    """A JSON list of objects (or of strings), or an object holding such a list under ``spec.json_key``."""
    path = Path(spec.path)
    with _open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and spec.json_key:
        data = data.get(spec.json_key)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of rows (set json_key for a list inside an object)")
    return [row if isinstance(row, dict) else {"prompt": row} for row in data]


@loader("csv")
def read_csv(spec: TaskSpec) -> Rows:
    with _open_text(Path(spec.path)) as handle:
        return [dict(row) for row in csv.DictReader(handle)]


@loader("tsv")
def read_tsv(spec: TaskSpec) -> Rows:
    with _open_text(Path(spec.path)) as handle:
        return [dict(row) for row in csv.DictReader(handle, delimiter="\t")]


@loader("txt")
def read_txt(spec: TaskSpec) -> Rows:
    """One prompt a line; blank lines and lines starting with ``#`` are skipped."""
    with _open_text(Path(spec.path)) as handle:
        lines = [line.strip() for line in handle]
    return [{"prompt": line} for line in lines if line and not line.startswith("#")]


@loader("datasets")
def read_datasets(spec: TaskSpec) -> Rows:
    """``datasets.load_dataset(path, subset, split=..., data_files=...)``: a Hub id (online) or a builder."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"task {spec.name}: format 'datasets' needs the datasets package") from None
    try:
        dataset = datasets.load_dataset(spec.path, spec.subset, split=spec.split, data_files=spec.data_files)
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        raise ConfigError(f"task {spec.name}: could not load dataset {spec.path!r}: {exc}") from None
    return [dict(row) for row in dataset]


def _label(value: Any, label_map: dict[str, Label], where: str) -> Label | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    key = str(value).strip().lower()
    if key not in label_map:
        raise ConfigError(f"{where}: label {value!r} is neither harmful nor benign (add it to label_map)")
    return label_map[key]


PACKAGE_PREFIX = "pkg:"


def package_file(path: str) -> Path:
    """``pkg:<package>/<file>``: a data file inside an installed package, located without importing it."""
    import importlib.util

    package, _, inner = path.removeprefix(PACKAGE_PREFIX).partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"{path}: package {package!r} is not installed (see docs/evals.md for how to install it)")
    file = Path(next(iter(found.submodule_search_locations))) / inner
    if not file.is_file():
        raise ConfigError(f"{path}: no file {inner} in package {package}")
    return file


def _filter_rows(spec: TaskSpec, rows: Rows) -> Rows:
    """Apply the task's ``exclude``, ``bucket`` and ``sample`` to the raw rows."""
    from training.data.splits import hash_sample, in_eval_bucket

    rows = [r for r in rows if not any(str(r.get(k)) in set(v) for k, v in spec.exclude.items())]
    if spec.bucket == "eval":
        rows = [r for r in rows if isinstance(r.get(spec.prompt_field), str) and in_eval_bucket(r[spec.prompt_field])]
    if spec.sample is not None:
        rows = hash_sample(rows, spec.sample, 0, lambda r: str(r.get(spec.prompt_field)))
    return rows


def load_prompts(spec: TaskSpec) -> list[EvalPrompt]:
    """The task's prompts: rows from its format's loader, filtered, its columns picked, its labels mapped."""
    fmt = spec.format or infer_format(spec.path)
    if spec.path.startswith(PACKAGE_PREFIX):  # located now, not when the task file is read
        spec = spec.model_copy(update={"path": str(package_file(spec.path))})
    rows = _filter_rows(spec, LOADERS.get(fmt)(spec))
    label_map = {**DEFAULT_LABEL_MAP, **{str(k).strip().lower(): v for k, v in spec.label_map.items()}}
    prompts: list[EvalPrompt] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        where = f"task {spec.name}, row {number}"
        text = row.get(spec.prompt_field)
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}: field {spec.prompt_field!r} missing or empty")
        label = spec.label
        if label is None and spec.label_field is not None:
            label = _label(row.get(spec.label_field), label_map, where)
        raw_id = row.get(spec.id_field) if spec.id_field else None
        prompt_id = str(raw_id) if raw_id is not None else hashlib.sha256(text.encode()).hexdigest()[:12]
        if prompt_id in seen:
            prompt_id = f"{prompt_id}-{number}"
        seen.add(prompt_id)
        skip = {spec.prompt_field, spec.label_field, spec.id_field}
        kept = spec.metadata_fields
        metadata = {k: v for k, v in row.items() if k not in skip and _is_plain(v) and (kept is None or k in kept)}
        prompts.append(EvalPrompt(id=prompt_id, prompt=text, label=label, metadata=metadata))
        if spec.limit is not None and len(prompts) >= spec.limit:
            break
    if not prompts:
        raise ConfigError(f"task {spec.name}: no prompts in {spec.path}")
    return prompts


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def iter_texts(path: Path, fields: tuple[str, ...]) -> Iterator[str]:
    """Every string under one of ``fields`` in a JSONL / JSON / CSV file, or every line of any other file.

    Used to read training corpora for the overlap check: ``CorrectionTriple``
    JSONL (``question``), ``PreferencePair`` JSONL (``prompt``), instruction
    JSON lists (``instruction``) and plain prompt files all work.
    """
    fmt = infer_format(str(path))
    if fmt in ("jsonl", "json", "csv", "tsv"):
        from evals.tasks import TaskSpec

        spec = TaskSpec(name=path.name, path=str(path), format=fmt)
        for row in LOADERS.get(fmt)(spec):
            for field in fields:
                value = row.get(field)
                if isinstance(value, str):
                    yield value
        return
    with _open_text(path) as handle:
        for line in handle:
            if line.strip():
                yield line.strip()
