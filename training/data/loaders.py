"""Loaders that turn public safety data sets into the project's record kinds.

Each public format names its columns differently and is messy in its own way
(empty responses, labels written as ``"1"``/``1``/``True``, a category given as
a dict of flags, truncated lines). A loader reads rows through
:func:`training.data.rows.read_rows` (local files of several formats, a
``save_to_disk`` dataset, or a Hub id) and yields :mod:`training.data.records`
models. A row it cannot use is counted in the
:class:`~training.data.rows.LoadReport` under a reason, with a few examples
kept, and the load goes on: a corpus build should never die on row 3,117, and
never lose rows without saying so.

Adding a format is adding a function ``load_x(source, report, **kw)`` and an
entry in :data:`LOADERS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aligner_proxy.core.files import read_jsonl_models
from training.data.hh_dialogue import render_dialogue, split_hh_pair
from training.data.records import CorrectionTriple, PreferencePair, SafetyLabel
from training.data.rows import BadRow, LoadReport, read_rows

logger = logging.getLogger(__name__)


class Instruction(BaseModel):
    """A prompt without an answer (benign instruction sets): the fourth shape the corpus reads.

    Kept here rather than in ``records.py`` because no trainer consumes it:
    the corpus builder answers these prompts with the upstream model first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    instruction: str = Field(min_length=1)


class SensitiveItem(BaseModel):
    """One row of ``sensitive_benign.jsonl``: a benign question that sounds harmful, and a good answer."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    topic: str


def read_sensitive(paths: str | Path | Sequence[str | Path]) -> list[SensitiveItem]:
    """The rows of one sensitive-benign file, or of several in order (a later set adds to the first)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [item for path in paths for item in read_jsonl_models(path, SensitiveItem)]


Record = CorrectionTriple | SafetyLabel | PreferencePair | Instruction


# ---------------------------------------------------------------- field helpers


def _text(row: Mapping[str, Any], key: str) -> str:
    """A required non-empty string field, stripped."""
    if key not in row or row[key] is None:
        raise BadRow(f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise BadRow(f"wrong type for {key!r}")
    value = value.strip()
    if not value:
        raise BadRow(f"empty field {key!r}")
    return value


_TRUE = {"1", "true", "yes", "y", "t", "1.0"}
_FALSE = {"0", "false", "no", "n", "f", "0.0"}


def _flag(row: Mapping[str, Any], key: str) -> bool:
    """A required boolean, accepting the spellings public files use (``1``, ``"0"``, ``"True"``)."""
    if key not in row or row[key] is None or row[key] == "":
        raise BadRow(f"missing field {key!r}")
    value = row[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise BadRow(f"wrong type for {key!r}")


def _choice(row: Mapping[str, Any], key: str, allowed: tuple[int, ...]) -> int:
    if key not in row or row[key] is None or row[key] == "":
        raise BadRow(f"missing field {key!r}")
    value = row[key]
    try:
        number = int(value) if not isinstance(value, bool) else -1
    except (TypeError, ValueError):
        number = -1
    if number not in allowed:
        raise BadRow(f"wrong type for {key!r}")
    return number


def _category(value: Any) -> str | None:
    """BeaverTails gives ``{"violence,aiding_and_abetting,incitement": true, ...}``; keep the true keys."""
    if value is None:
        return None
    if isinstance(value, dict):
        hits = [str(k) for k, v in value.items() if v is True or v in (1, "1", "true", "True")]
        return ",".join(sorted(hits)) or None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or None
    raise BadRow("wrong type for 'category'")


def _records(
    source: str | Path,
    report: LoadReport,
    make: Callable[[dict[str, Any]], list[Record]],
    **read_kwargs: Any,
) -> Iterator[Record]:
    """Drive ``make`` over every row, turning :class:`BadRow` and validation errors into report counts."""
    for row in read_rows(source, report, **read_kwargs):
        report.rows += 1
        try:
            made = make(row)
        except BadRow as bad:
            report.add_bad(bad.reason, row)
            continue
        except ValidationError as error:
            first = error.errors()[0]
            report.add_bad(f"invalid record: {'.'.join(map(str, first['loc']))} {first['type']}", row)
            continue
        report.records += len(made)
        yield from made


# ---------------------------------------------------------------- loaders


def load_aligner(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """AlignerTails / aligner-20K: ``question, answer, correction`` → :class:`CorrectionTriple`.

    A row whose correction equals its answer is an ``identity`` triple."""

    def make(row: dict[str, Any]) -> list[Record]:
        question, answer, correction = _text(row, "question"), _text(row, "answer"), _text(row, "correction")
        kind = "identity" if answer == correction else "unsafe_to_safe"
        return [
            CorrectionTriple(source=report.source, question=question, answer=answer, correction=correction, kind=kind)
        ]

    return _records(source, report, make, **read_kwargs)


def load_beavertails(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """BeaverTails: ``prompt, response, is_safe, category`` → :class:`SafetyLabel`."""

    def make(row: dict[str, Any]) -> list[Record]:
        return [
            SafetyLabel(
                source=report.source,
                question=_text(row, "prompt"),
                answer=_text(row, "response"),
                is_safe=_flag(row, "is_safe"),
                category=_category(row.get("category")),
            )
        ]

    return _records(source, report, make, **read_kwargs)


def load_pku_saferlhf(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """PKU-SafeRLHF: one :class:`PreferencePair` (chosen = the better response) and two :class:`SafetyLabel`.

    ``safer`` says which side of the pair the annotators found safer, which
    need not be the more helpful one."""

    def make(row: dict[str, Any]) -> list[Record]:
        prompt = _text(row, "prompt")
        responses = (_text(row, "response_0"), _text(row, "response_1"))
        safe = (_flag(row, "is_response_0_safe"), _flag(row, "is_response_1_safe"))
        better = _choice(row, "better_response_id", (0, 1))
        safer = _choice(row, "safer_response_id", (0, 1))
        labels: list[Record] = [
            SafetyLabel(source=report.source, question=prompt, answer=r, is_safe=s)
            for r, s in zip(responses, safe, strict=True)
        ]
        if responses[0] == responses[1]:
            report.add_bad("identical responses (labels kept, pair dropped)", row)
            return labels
        pair = PreferencePair(
            source=report.source,
            prompt=prompt,
            chosen=responses[better],
            rejected=responses[1 - better],
            safer="chosen" if safer == better else "rejected",
            chosen_is_safe=safe[better],
            rejected_is_safe=safe[1 - better],
        )
        return [pair, *labels]

    return _records(source, report, make, **read_kwargs)


def load_pku_saferlhf_mini(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """The JailbreakEval sample of PKU-SafeRLHF: ``question, answer, label`` (1 = unsafe) → :class:`SafetyLabel`."""

    def make(row: dict[str, Any]) -> list[Record]:
        unsafe = _flag(row, "label")
        question, answer = _text(row, "question"), _text(row, "answer")
        return [SafetyLabel(source=report.source, question=question, answer=answer, is_safe=not unsafe)]

    return _records(source, report, make, **read_kwargs)


def load_hh_rlhf(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """Anthropic HH-RLHF: ``chosen``/``rejected`` dialogues → :class:`PreferencePair`.

    ``prompt`` is the dialogue up to the last assistant turn rendered by
    :func:`render_dialogue`; ``chosen``/``rejected`` are the two last assistant
    turns. HH-RLHF says which answer people preferred, not which is safe, so
    ``safer`` stays unset."""

    def make(row: dict[str, Any]) -> list[Record]:
        context, chosen, rejected = split_hh_pair(_text(row, "chosen"), _text(row, "rejected"))
        return [PreferencePair(source=report.source, prompt=render_dialogue(context), chosen=chosen, rejected=rejected)]

    return _records(source, report, make, **read_kwargs)


def load_do_not_answer(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """Do-Not-Answer: ``question`` and, per model, ``<model>_response`` / ``<model>_harmful`` → :class:`SafetyLabel`.

    Models are found from the columns, so a file with more or fewer models
    loads too. A model cell that is missing or empty is counted per response;
    the row's other responses are kept. ``category`` is ``types_of_harm``."""

    def make(row: dict[str, Any]) -> list[Record]:
        question = _text(row, "question")
        models = [k.removesuffix("_response") for k in row if k.endswith("_response") and f"{k[:-9]}_harmful" in row]
        if not models:
            raise BadRow("no <model>_response/<model>_harmful columns")
        category = row.get("types_of_harm") if isinstance(row.get("types_of_harm"), str) else None
        labels: list[Record] = []
        for model in models:
            try:
                answer, harmful = _text(row, f"{model}_response"), _flag(row, f"{model}_harmful")
            except BadRow as bad:
                report.add_bad(bad.reason.replace(model, "<model>"), {"question": question, "model": model})
                continue
            labels.append(
                SafetyLabel(
                    source=report.source,
                    question=question,
                    answer=answer,
                    is_safe=not harmful,
                    category=(category or "").strip() or None,
                    model=model,
                )
            )
        return labels

    return _records(source, report, make, **read_kwargs)


def load_safety_instructions(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """Safety-tuned LLaMAs data: ``instruction`` (+ ``input``) with a safe ``output`` → a safe :class:`SafetyLabel`."""

    def make(row: dict[str, Any]) -> list[Record]:
        question = _text(row, "instruction")
        extra = row.get("input")
        if isinstance(extra, str) and extra.strip():
            question = f"{question}\n\n{extra.strip()}"
        return [SafetyLabel(source=report.source, question=question, answer=_text(row, "output"), is_safe=True)]

    return _records(source, report, make, **read_kwargs)


def load_instructions(source: str | Path, report: LoadReport, **read_kwargs: Any) -> Iterator[Record]:
    """Benign instruction lists (``instruction``, optional ``input``) → :class:`Instruction`."""

    def make(row: dict[str, Any]) -> list[Record]:
        text = _text(row, "instruction")
        extra = row.get("input")
        if isinstance(extra, str) and extra.strip():
            text = f"{text}\n\n{extra.strip()}"
        return [Instruction(source=report.source, instruction=text)]

    return _records(source, report, make, **read_kwargs)


Loader = Callable[..., Iterator[Record]]

LOADERS: Mapping[str, Loader] = {
    "aligner": load_aligner,
    "beavertails": load_beavertails,
    "pku-saferlhf": load_pku_saferlhf,
    "pku-saferlhf-mini": load_pku_saferlhf_mini,
    "hh-rlhf": load_hh_rlhf,
    "do-not-answer": load_do_not_answer,
    "safety-instructions": load_safety_instructions,
    "instructions": load_instructions,
}


def load(
    fmt: str, source: str | Path, *, name: str | None = None, **read_kwargs: Any
) -> tuple[list[Record], LoadReport]:
    """Load every record of ``source`` in format ``fmt`` (a key of :data:`LOADERS`).

    ``name`` becomes each record's ``source`` (default: ``fmt``). Extra keyword
    arguments reach ``datasets.load_dataset`` for Hub ids (``split``,
    ``data_dir``, ...)."""
    if fmt not in LOADERS:
        raise KeyError(f"unknown format {fmt!r}; known: {', '.join(sorted(LOADERS))}")
    report = LoadReport(source=name or fmt)
    records = list(LOADERS[fmt](source, report, **read_kwargs))
    if report.bad:
        logger.info(
            "%s: %d rows, %d records, bad rows %s", report.source, report.rows, report.records, dict(report.bad)
        )
    return records, report
