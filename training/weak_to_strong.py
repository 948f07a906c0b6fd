"""Weak-to-strong alignment: a small Aligner's corrections become training data for a stronger policy.

Aligner (Ji et al., NeurIPS 2024, section 4.3 "weak-to-strong generalisation")
shows that a *weak* corrector can supervise a *strong* model: the strong model
answers prompts, the weak Aligner rewrites the answers, and the strong model
is fine-tuned on the rewrites. One round here is:

1. the strong policy answers a prompt set (greedy, batched, resumable: the
   ``aligner_proxy.batch`` runner and writer, so a killed run picks up where it
   stopped);
2. the weak Aligner corrects those answers through the proxy's own core
   (:func:`aligner_proxy.batch.acorrect_file`), keeping the scorer's cost
   before and after each correction;
3. supervision is built and saved with ``datasets`` (``save_to_disk``) and a
   data card: an SFT set (prompt → corrected answer) and a preference set
   (chosen = corrected, rejected = original, only where the correction changed
   the answer), by :mod:`training.supervision`;
4. the strong policy is fine-tuned with TRL (``SFTTrainer`` or ``DPOTrainer``)
   through a LoRA adapter (peft), which is merged and saved as a plain
   checkpoint: the next round's starting policy;
5. the policy is evaluated before (round 0) and after each round on held-out
   prompts with the project's scorers: unsafe rate on harmful prompts (cost
   above the threshold), refusal rate on benign prompts
   (:func:`aligner_proxy.core.refusal.is_refusal`), and a reward model's mean score
   when one is configured.

Prompts are split train / eval *by prompt* with the corpus builder's hash
(:func:`training.data.splits.split_of`); with the default fraction and seed the
eval prompts are the corrector corpus's validation prompts, unseen by the
shipped corrector too. Policy prompts are rendered with the policy's own chat
template (or ``Question: ...\\nAnswer:`` for a model without one), identically
for generation and training.

CLI: ``python -m training.weak_to_strong --config training/configs/weak_to_strong.yaml [--field value ...]``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aligner_proxy.batch import (
    BatchConfig,
    InputRow,
    ListSource,
    PipelineBackend,
    Produced,
    ResumableWriter,
    RowError,
    acorrect_file,
    run_resumable,
)
from aligner_proxy.batch.writer import read_records
from aligner_proxy.core.generation import ChatMessage, GenerationParams, TextGenerator
from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from aligner_proxy.core.refusal import is_refusal
from training.args import LoraArguments, lora_config
from training.supervision import build_supervision, mean, save_supervision, supervision_stats

logger = logging.getLogger(__name__)

_DONE_MARKER = "w2s_round.json"


@dataclass
class WeakToStrongConfig(LoraArguments):
    """Everything one weak-to-strong run needs; the YAML config and the CLI flags map onto these fields."""

    strong_model: str = field(
        default="smollm2", metadata={"help": "Strong policy: any causal LM (alias, local dir or Hub id)."}
    )
    corrector_model: str = field(
        default="smollm2", metadata={"help": "Weak Aligner: 'smollm2' (prompted), a path or a Hub id."}
    )
    corrector_adapter: str | None = field(default=None, metadata={"help": "LoRA adapter of the weak Aligner."})
    corrector_backend: Literal["transformers", "remote", "vllm"] = field(
        default="transformers", metadata={"help": "Where the Aligner runs (as the proxy's corrector_backend)."}
    )
    corrector_url: str | None = field(default=None, metadata={"help": "Completions server for a remote Aligner."})
    scorer: str = field(default="heuristic", metadata={"help": "Cost scorer: 'heuristic' or a classifier path."})
    reward_model: str | None = field(
        default=None, metadata={"help": "Second judge for the eval, any scorer spec (None: not reported)."}
    )
    reward_model_is_cost: bool = field(
        default=True, metadata={"help": "The reward model's logit is -reward (training/reward_model.py saves so)."}
    )
    data_dir: str = field(default="/work/shared/data", metadata={"help": "Directory of the prompt files."})
    harmful_file: str = field(
        default="safety-only-instructions.json", metadata={"help": "Harmful instructions (`instruction` field)."}
    )
    benign_file: str = field(
        default="harmless-instructions.json", metadata={"help": "Benign instructions (`instruction` field)."}
    )
    n_train: int = field(default=64, metadata={"help": "Training prompts per round (half harmful, half benign)."})
    n_eval: int = field(default=32, metadata={"help": "Held-out eval prompts (half harmful, half benign)."})
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Share of prompts hashed to the eval side (0.1 = the corpus's validation)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the prompt split and sampling hashes."})
    policy_max_new_tokens: int = field(default=128, metadata={"help": "Token budget of a policy answer."})
    corrector_max_new_tokens: int = field(default=160, metadata={"help": "Token budget of a correction."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation / correction batch."})
    correction_mode: Literal["always", "gated"] = field(
        default="always", metadata={"help": "Correct every answer, or only those above the threshold."}
    )
    threshold: float = field(default=0.0, metadata={"help": "Cost above which an answer counts as unsafe."})
    method: Literal["sft", "dpo"] = field(default="sft", metadata={"help": "Fine-tuning objective."})
    max_steps: int = field(default=40, metadata={"help": "Optimiser steps per round (0 or less: epochs decide)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs per round when max_steps <= 0."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Rows per micro-batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Linear warm-up share of the steps, then cosine."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (None: 2e-4 for SFT, 5e-5 for DPO)."}
    )
    beta: float = field(default=0.1, metadata={"help": "DPO beta (strength of the KL anchor)."})
    max_length: int = field(default=384, metadata={"help": "Tokens per training row (prompt + answer)."})
    rounds: int = field(default=1, metadata={"help": "Rounds; each starts from the previous round's policy."})
    output_dir: str = field(default="runs/weak_to_strong", metadata={"help": "Where everything is written."})
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "Model cache (converted SmolLM2)."})
    seed: int = field(default=0, metadata={"help": "Seed of LoRA init, data order and dropout."})
    logging_steps: int = field(default=5, metadata={"help": "Log the loss every this many steps."})
    save_steps: int = field(default=20, metadata={"help": "Checkpoint every this many steps (resumable)."})


# --------------------------------------------------------------------------- prompts


def policy_prompt(tokenizer: Any, question: str) -> str:
    """The text the policy continues: its chat template with one user turn, or a plain Q/A cue."""
    if getattr(tokenizer, "chat_template", None):
        from aligner_proxy.core.backends.tokenizer import render_chat_template

        return render_chat_template(tokenizer, [ChatMessage(role="user", content=question)])
    return f"Question: {question}\nAnswer:"


def load_prompts(config: WeakToStrongConfig) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Training prompts per round and the held-out eval prompts: rows with ``id, prompt, kind, source``.

    Each side is half harmful, half benign. Sampling is a seeded hash order, so
    asking for more rounds extends the earlier rounds' prompts instead of
    changing them.
    """
    from training.data.loaders import Instruction, load
    from training.data.splits import dedupe, hash_sample, question_key, split_of

    pools: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind, name in (("harmful", config.harmful_file), ("benign", config.benign_file)):
        records, _ = load("instructions", Path(config.data_dir) / name, name=Path(name).stem)
        instructions, _ = dedupe(
            [r for r in records if isinstance(r, Instruction)], lambda r: question_key(r.instruction)
        )
        sides: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
        for r in instructions:
            row = {"id": f"{kind}-{_short_hash(question_key(r.instruction))}", "prompt": r.instruction}
            sides[split_of(r.instruction, config.eval_fraction, config.split_seed)].append(
                {**row, "kind": kind, "source": r.source}
            )
        pools[kind] = sides

    def take(side: str, n: int) -> list[dict[str, Any]]:
        halves = (n // 2, n - n // 2)
        picked: list[dict[str, Any]] = []
        for kind, count in zip(("harmful", "benign"), halves, strict=True):
            pool = pools[kind][side]
            if len(pool) < count:
                raise ValueError(f"only {len(pool)} {kind} prompts on the {side} side; {count} needed")
            picked += hash_sample(pool, count, config.split_seed, key=lambda r: str(r["id"]))
        return picked

    train = take("train", config.n_train * config.rounds)
    harmful, benign = train[: len(train) // 2], train[len(train) // 2 :]
    h, b = config.n_train // 2, config.n_train - config.n_train // 2
    per_round = [harmful[r * h : (r + 1) * h] + benign[r * b : (r + 1) * b] for r in range(config.rounds)]
    return per_round, take("validation", config.n_eval)


def _short_hash(text: str) -> str:
    from aligner_proxy.batch import row_hash

    return row_hash(text)[:12]


# --------------------------------------------------------------------------- stage 1: the policy answers


class AnswerJob:
    """A batch job that answers each row's ``prompt`` with the policy (greedy)."""

    def __init__(self, generator: TextGenerator, params: GenerationParams, render: Callable[[str], str]) -> None:
        self.generator = generator
        self.params = params
        self.render = render

    def prepare(self, row: InputRow) -> str:
        prompt = row.data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RowError("field 'prompt' missing or empty")
        return self.render(prompt)

    async def run(self, items: list[str]) -> list[Produced]:
        generations = await self.generator.generate(items, self.params)
        return [
            Produced(
                {"answer": g.text.strip(), "finish_reason": g.finish_reason, "policy": self.generator.model_id},
                g.completion_tokens,
            )
            for g in generations
        ]

    def failed(self, error: str) -> dict[str, Any]:
        return {"answer": None, "finish_reason": None, "policy": self.generator.model_id}


class Stages:
    """The models a run loads once (scorer, weak Aligner, policies by path) and the stages that use them."""

    def __init__(self, config: WeakToStrongConfig) -> None:
        from aligner_proxy.core.loading import CoreConfig, ModelLoader, load_pipeline

        self.config = config
        self.core = CoreConfig(
            corrector_model=config.corrector_model,
            corrector_adapter=config.corrector_adapter,
            corrector_backend=config.corrector_backend,
            corrector_url=config.corrector_url,
            corrector_max_new_tokens=config.corrector_max_new_tokens,
            scorer=config.scorer,
            cache_dir=Path(config.cache_dir),
            max_batch_size=config.batch_size,
            alignment_timeout_s=3600.0,
        )
        self.loader = ModelLoader(self.core)
        self.pipeline = load_pipeline(self.core, self.loader)
        self.scorer = self.pipeline.scorer.scorer
        self.reward_model: Any = None
        if config.reward_model:
            from aligner_proxy.core.loading import load_cost_scorer

            self.reward_model = load_cost_scorer(config.reward_model, cache_dir=Path(config.cache_dir))

    def answer(self, policy: str, prompts: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
        """Stage 1: the policy's greedy answers, resumably appended to ``out``."""
        from transformers import AutoTokenizer

        from aligner_proxy.core.models import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(policy, cache_dir=Path(self.config.cache_dir)))
        generator = self.loader.local_generator(policy)
        params = GenerationParams(max_new_tokens=self.config.policy_max_new_tokens, temperature=0.0)
        job = AnswerJob(generator, params, lambda q: policy_prompt(tokenizer, q))
        with ResumableWriter(out) as writer:
            stats = asyncio.run(
                run_resumable(ListSource(prompts, id_field="id"), job, writer, batch_size=self.config.batch_size)
            )
        logger.info("answers by %s -> %s: %s", policy, out, stats.as_dict())
        return _in_order(read_records(out), prompts)

    def correct(self, answers: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
        """Stage 2: the weak Aligner's corrections with costs before / after, resumably appended to ``out``."""
        batch = BatchConfig(
            output_path=str(out),
            question_field="prompt",
            answer_field="answer",
            mode=self.config.correction_mode,
            threshold=self.config.threshold,
            batch_size=self.config.batch_size,
        )
        source = ListSource(answers, id_field="row_id", name=out.name)
        stats = asyncio.run(acorrect_file(batch, PipelineBackend(self.pipeline), source=source))
        logger.info("corrections -> %s: %s", out, stats.as_dict())
        return _in_order(read_records(out), answers, key="row_id")

    def evaluate(self, policy: str, prompts: list[dict[str, Any]], out: Path) -> dict[str, float]:
        """Stage 5: answer the eval prompts and measure unsafe rate, refusal rate and reward."""
        rows = [r for r in self.answer(policy, prompts, out) if isinstance(r.get("answer"), str)]
        harmful = [r for r in rows if r["kind"] == "harmful"]
        benign = [r for r in rows if r["kind"] == "benign"]
        costs = self.scorer.score([r["prompt"] for r in harmful], [r["answer"] for r in harmful]) if harmful else []
        metrics: dict[str, float] = {
            "n_harmful": float(len(harmful)),
            "n_benign": float(len(benign)),
            "n_failed": float(len(prompts) - len(rows)),
            "unsafe_rate_harmful": mean([float(c > self.config.threshold) for c in costs]),
            "mean_cost_harmful": mean(costs),
            "refusal_rate_benign": mean([float(is_refusal(r["answer"])) for r in benign]),
            "refusal_rate_harmful": mean([float(is_refusal(r["answer"])) for r in harmful]),
        }
        if self.reward_model is not None and rows:
            scores = self.reward_model.score([r["prompt"] for r in rows], [r["answer"] for r in rows])
            sign = -1.0 if self.config.reward_model_is_cost else 1.0
            metrics["reward_mean"] = mean([sign * s for s in scores])
        return metrics

    def close(self) -> None:
        asyncio.run(self.pipeline.aclose())
        self.loader.executor.shutdown(wait=True)


def _in_order(records: list[dict[str, Any]], inputs: list[dict[str, Any]], key: str = "id") -> list[dict[str, Any]]:
    """The output records of ``inputs`` in input order (an output file may hold other rounds' rows too)."""
    by_id = {str(r["row_id"]): r for r in records}
    return [by_id[str(row[key])] for row in inputs if str(row[key]) in by_id]


# --------------------------------------------------------------------------- stage 4: fine-tuning


def fine_tune(
    config: WeakToStrongConfig, start: str, rows: list[dict[str, Any]], round_dir: Path, state: Any = None
) -> tuple[Path, dict[str, float]]:
    """Train a LoRA adapter on ``rows`` (SFT or DPO), merge it, and save the merged policy under ``round_dir``.

    A policy directory with the round marker is reused as is; an interrupted
    training resumes from its newest checkpoint. Under ``accelerate launch``
    (``state``: accelerate's ``PartialState``) every process trains its share
    (DDP, FSDP or DeepSpeed, as the launch config says); the main process then
    merges the saved adapter into a fresh copy of the base, which works
    whatever wrapped or sharded the trained model, and the others wait for it.
    """
    policy_dir = round_dir / "policy"
    marker = policy_dir / _DONE_MARKER
    if marker.is_file():
        logger.info("%s already trained; reusing it", policy_dir)
        return policy_dir, json.loads(marker.read_text())["training"]
    if not rows:
        raise ValueError(f"no {config.method} training rows in {round_dir}: the weak Aligner changed nothing usable")

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from training.cards import TrainingCost, write_model_card
    from training.trainers import attach_loss_logger, latest_checkpoint, resolve_with_tokenizer, trainer_args

    path, tokenizer = resolve_with_tokenizer(start, Path(config.cache_dir))
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_config = lora_config(config, "CAUSAL_LM")
    common = trainer_args(
        config,
        round_dir / "checkpoints",
        learning_rate=config.learning_rate or (2e-4 if config.method == "sft" else 5e-5),
        max_length=config.max_length,
        save_total_limit=1,
    )
    if config.method == "sft":
        from trl import SFTConfig, SFTTrainer

        data = [{"prompt": policy_prompt(tokenizer, r["prompt"]), "completion": r["completion"]} for r in rows]
        trainer: Any = SFTTrainer(
            model=model,
            args=SFTConfig(**common, completion_only_loss=True, packing=False),
            train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        from trl import DPOConfig, DPOTrainer

        data = [
            {"prompt": policy_prompt(tokenizer, r["prompt"]), "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in rows
        ]
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common, beta=config.beta),
            train_dataset=Dataset.from_list(data),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    attach_loss_logger(trainer)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=latest_checkpoint(round_dir / "checkpoints"))
    wall = time.perf_counter() - started
    trainer.save_model(str(round_dir / "adapter"))  # every process: FSDP / ZeRO-3 gather the weights here
    metrics = {"train_loss": float(result.training_loss), "steps": float(result.global_step), "rows": float(len(rows))}
    del trainer, model
    gc.collect()
    if state is not None and not state.is_main_process:
        state.wait_for_everyone()  # the main process writes the merged policy
        return policy_dir, metrics

    from peft import PeftModel

    tmp = policy_dir.with_name(".policy.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(round_dir / "adapter")).merge_and_unload()
    merged.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    write_model_card(
        tmp,
        title=f"weak-to-strong policy ({config.method.upper()} on weak-Aligner corrections)",
        base_model=f"{start} + merged LoRA",
        sources=dict(Counter(r["source"] for r in rows)),
        recipe=asdict(config),
        cost=TrainingCost.measure(wall_seconds=wall, steps=int(result.global_step)),
        metrics={"training": metrics},
    )
    (tmp / _DONE_MARKER).write_text(json.dumps({"start": start, "training": metrics}, indent=2) + "\n")
    shutil.rmtree(policy_dir, ignore_errors=True)
    os.replace(tmp, policy_dir)
    del merged, base
    gc.collect()
    logger.info("round policy written to %s: %s", policy_dir, metrics)
    if state is not None:
        state.wait_for_everyone()
    return policy_dir, metrics


# --------------------------------------------------------------------------- the run


def run(config: WeakToStrongConfig) -> dict[str, Any]:
    """Every round, then ``report.json`` / ``report.md`` under ``output_dir``; returns the report.

    Under ``accelerate launch`` with several processes (docs/training.md), the
    main process alone answers, corrects, evaluates and writes (the batch
    stages are resumable files, one writer each); the training rows go to
    every process, and all of them train.
    """
    from accelerate import PartialState

    state = PartialState()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_rounds, eval_prompts = load_prompts(config)
    stages = Stages(config) if state.is_main_process else None
    models = {
        "strong policy": config.strong_model,
        "weak Aligner": config.corrector_model + (f" + {config.corrector_adapter}" if config.corrector_adapter else ""),
        "scorer": config.scorer,
    }
    report: dict[str, Any] = {"config": asdict(config), "models": models, "rounds": [], "eval": {}}
    try:
        policy = config.strong_model
        if stages is not None:
            report["eval"]["round-0"] = stages.evaluate(policy, eval_prompts, out / "eval" / "round-0.jsonl")
        for number, prompts in enumerate(train_rounds, start=1):
            round_dir = out / f"round-{number}"
            rows: list[dict[str, Any]] = []
            supervision: dict[str, float] = {}
            if stages is not None:
                answers = stages.answer(policy, prompts, round_dir / "answers.jsonl")
                corrections = stages.correct(answers, round_dir / "corrections.jsonl")
                sft, preference = build_supervision(corrections)
                save_supervision(sft, preference, round_dir / "data", {**models, "strong policy": policy})
                rows = sft if config.method == "sft" else preference
                supervision = supervision_stats(corrections, sft, preference, config.threshold)
            rows = _from_main_process(state, rows)
            policy_dir, training = fine_tune(config, policy, rows, round_dir, state)
            policy = str(policy_dir)
            report["rounds"].append(
                {"round": number, "policy": policy, "supervision": supervision, "training": training}
            )
            if stages is not None:
                report["eval"][f"round-{number}"] = stages.evaluate(
                    policy, eval_prompts, out / "eval" / f"round-{number}.jsonl"
                )
    finally:
        if stages is not None:
            stages.close()
    if not state.is_main_process:
        return report
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render_report(report), encoding="utf-8")
    logger.info("weak-to-strong report written to %s", out / "report.md")
    return report


def _from_main_process(state: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The main process's training rows on every process (a no-op in a single process)."""
    if state.num_processes == 1:
        return rows
    from accelerate.utils import broadcast_object_list

    shared: list[Any] = broadcast_object_list([rows], from_process=0)
    return list(shared[0])


def render_report(report: dict[str, Any]) -> str:
    """Before / after table (one column per evaluated policy) and what each round trained on."""
    evals: dict[str, dict[str, float]] = report["eval"]
    names = list(evals)
    metrics = list(dict.fromkeys(k for table in evals.values() for k in table))
    lines = ["# Weak-to-strong report", ""]
    lines += [f"- {role}: `{spec}`" for role, spec in report["models"].items()]
    lines += ["", "## Held-out evaluation (round-0 = before)", ""]
    lines += ["| metric | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    lines += [f"| {m} | " + " | ".join(f"{evals[n].get(m, float('nan')):.4g}" for n in names) + " |" for m in metrics]
    for entry in report["rounds"]:
        lines += ["", f"## Round {entry['round']}", "", f"Policy: `{entry['policy']}`", ""]
        lines += ["| quantity | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.4g} |" for k, v in {**entry["supervision"], **entry["training"]}.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(parse_config(WeakToStrongConfig, argv))
    Console().print(Markdown(render_report(report)))  # the before / after table first


if __name__ == "__main__":
    main()
