"""Choose the proxy's default for ``block`` on validation numbers: what the gate flags, what the corrector fixes.

In gated mode an answer reaches the corrector only when the gate flags it;
the correction is re-scored, and one still above the threshold is either
returned ``flagged`` (``block`` off) or replaced by the block message
(``block`` on). Whether blocking should be the default is a trade-off between
harmful answers let through and benign answers refused, and it depends on the
gate's errors and on what the corrector does to each kind. This script
measures both on the gate corpus's validation split (questions no model here
trained on; the threshold was calibrated there, the evaluation suite is kept
apart) by running the real core pipeline (gate + corrector, gated mode,
``block`` off) and reading what ``block`` on would have changed:

- harmful answers (labelled unsafe): share flagged; of those, share the
  corrector brings below the threshold, share still above (blocked with
  ``block``), share of corrections that are refusals;
- safe answers: share flagged; of those, share changed, share turned into
  refusals, share still above (blocked with ``block``).

Then, per setting, over *all* validation answers: harmful answers returned as
written or corrected-but-still-above (``unsafe_out``) and safe answers
changed, refused or blocked (``benign_disturbed``).

``python -m training.choose_policy --config training/configs/choose_policy.yaml``
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aligner_proxy.core.files import read_jsonl_models
from aligner_proxy.core.refusal import is_refusal
from training.data.records import SafetyLabel

logger = logging.getLogger(__name__)


@dataclass
class ChoosePolicyConfig:
    scorer: str = field(default="runs/gate", metadata={"help": "The gate (any load_cost_scorer spec)."})
    corrector_model: str = field(default="smollm2", metadata={"help": "The corrector's base model."})
    corrector_adapter: str = field(default="aligner-smollm2-lora-v1", metadata={"help": "LoRA adapter ('' = none)."})
    validation_file: str = field(default="runs/gate_corpus/gate_validation.jsonl", metadata={"help": "SafetyLabel."})
    max_flagged_harmful: int = field(default=64, metadata={"help": "Flagged unsafe answers sent to the corrector."})
    max_flagged_safe: int = field(default=64, metadata={"help": "Flagged safe answers sent to the corrector."})
    max_new_tokens: int = field(default=256, metadata={"help": "Correction budget (the proxy's default)."})
    output_file: str = field(default="runs/choose_policy.json", metadata={"help": "Report (JSON)."})
    seed: int = field(default=0, metadata={"help": "Seed of the samples of flagged answers."})


def _share(n: int, d: int) -> float:
    return n / d if d else float("nan")


def summarise(labels: list[SafetyLabel], flagged: list[bool], outcomes: dict[int, Any]) -> dict[str, Any]:
    """The table this module's docstring describes, from flags over all labels and outcomes of a flagged sample.

    Rates measured on the sample are applied to every flagged answer of its kind."""
    report: dict[str, Any] = {}
    for kind, unsafe in (("harmful", True), ("safe", False)):
        rows = [i for i, x in enumerate(labels) if x.is_safe != unsafe]
        hit = [i for i in rows if flagged[i]]
        sample = [i for i in hit if i in outcomes]
        unchecked = [i for i in sample if outcomes[i].status == "unchecked"]
        if unchecked:
            raise RuntimeError(f"{len(unchecked)} {kind} answers came back unchecked: {outcomes[unchecked[0]].error}")
        still = sum(outcomes[i].status == "flagged" for i in sample)
        changed = sum(outcomes[i].text != labels[i].answer for i in sample)
        refused = sum(is_refusal(outcomes[i].text) for i in sample)
        blocked_or_changed = sum(
            outcomes[i].status == "flagged" or outcomes[i].text != labels[i].answer for i in sample
        )
        blocked_or_refused = sum(outcomes[i].status == "flagged" or is_refusal(outcomes[i].text) for i in sample)
        report[kind] = {
            "n": len(rows),
            "flagged": _share(len(hit), len(rows)),
            "sampled": len(sample),
            "fixed_by_corrector": _share(len(sample) - still, len(sample)),
            "still_above_threshold": _share(still, len(sample)),
            "changed": _share(changed, len(sample)),
            "refusal_after_correction": _share(refused, len(sample)),
            "_blocked_or_changed": _share(blocked_or_changed, len(sample)),
            "_blocked_or_refused": _share(blocked_or_refused, len(sample)),
        }
    h, s = report["harmful"], report["safe"]
    for block in (False, True):
        # harmful out: not flagged, plus (block off) flagged and still above the threshold after correction
        unsafe_out = (1 - h["flagged"]) + (0.0 if block else h["flagged"] * h["still_above_threshold"])
        # benign disturbed: flagged and changed; with block, flagged-and-still-above become refusals too
        disturbed = s["flagged"] * (s["_blocked_or_changed"] if block else s["changed"])
        refused = s["flagged"] * (s["_blocked_or_refused"] if block else s["refusal_after_correction"])
        report[f"block={str(block).lower()}"] = {
            "harmful_unsafe_out": unsafe_out,
            "benign_disturbed": disturbed,
            "benign_refused": refused,
        }
    return report


def run(config: ChoosePolicyConfig) -> dict[str, Any]:
    from aligner_proxy.core.corrector import CorrectionInput
    from aligner_proxy.core.loading import CoreConfig, ModelLoader, make_pipeline
    from aligner_proxy.core.policy import PolicyConfig
    from aligner_proxy.core.scorer import default_threshold, score_batched

    labels = read_jsonl_models(config.validation_file, SafetyLabel)
    core = CoreConfig(
        scorer=config.scorer,
        corrector_model=config.corrector_model,
        corrector_adapter=config.corrector_adapter or "none",
        corrector_max_new_tokens=config.max_new_tokens,
        alignment_timeout_s=3600.0,  # offline: a batch of 256-token corrections on CPU takes minutes
    )
    loader = ModelLoader(core)
    scorer = loader.scorer()
    threshold = default_threshold(scorer)
    costs = score_batched(scorer, [x.question for x in labels], [x.answer for x in labels])
    flagged = [c > threshold for c in costs]
    rng = random.Random(config.seed)
    picks: list[int] = []
    for unsafe, cap in ((True, config.max_flagged_harmful), (False, config.max_flagged_safe)):
        hit = [i for i, x in enumerate(labels) if flagged[i] and x.is_safe != unsafe]
        picks += rng.sample(hit, min(cap, len(hit)))
    pipeline = make_pipeline(core, scorer=scorer, corrector_generator=loader.corrector_generator())
    started = time.perf_counter()
    items = [CorrectionInput(question=labels[i].question, answer=labels[i].answer) for i in picks]
    # block off: this script decides blocking from the flagged rows; fail closed: an error, never a row
    policy = PolicyConfig(mode="gated", threshold=threshold, block=False, failure_policy="fail_closed")

    async def align_all() -> list[Any]:
        chunks = [items[k : k + 8] for k in range(0, len(items), 8)]
        return [o for chunk in chunks for o in await pipeline.align(chunk, policy)]

    aligned = asyncio.run(align_all())
    seconds = time.perf_counter() - started
    outcomes = dict(zip(picks, aligned, strict=True))
    report = {
        "config": asdict(config),
        "threshold": threshold,
        "seconds": seconds,
        **summarise(labels, flagged, outcomes),
        "samples": [
            {
                "label": "safe" if labels[i].is_safe else "unsafe",
                "source": labels[i].source,
                "question": labels[i].question,
                "answer": labels[i].answer[:400],
                "final": outcomes[i].text[:400],
                "status": outcomes[i].status,
                "cost_before": outcomes[i].cost_before,
                "cost_after": outcomes[i].cost_after,
            }
            for i in picks[:40]
        ],
    }
    out = Path(config.output_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(parse_config(ChoosePolicyConfig, argv))
    logger.info("%s", json.dumps({k: v for k, v in report.items() if k not in ("samples", "config")}, indent=1))


if __name__ == "__main__":
    main()
