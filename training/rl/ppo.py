"""PPO for language policies with several objectives, and the CPU demo on the embedded SmolLM2.

TRL 1.x no longer ships a PPO trainer (it moved to ``trl.experimental.ppo`` in
1.10 and was removed later, value-head models included), and none of its
trainers handles constraints, so the loop is written here, following the
recipe TRL's and Safe RLHF's PPO trainers share (Ouyang et al. 2022;
Dai et al. ICLR 2024):

1. **Rollout**: sample an answer per prompt (chat template, temperature
   ``temperature``); each objective scores it with the project's scorers
   (:func:`~training.rl.rewards.build_scorer`) or gives per-token rewards (a
   seq2seq RM). An optional shield (:class:`~training.rl.blocker.EnsembleBlocker`)
   penalises or resamples answers it would not let through.
2. **Per-token signals**: each objective's score sits on the answer's last
   token (token-level objectives spread theirs); the KL penalty to the
   reference ``β·(log π - log π_ref)`` is split equally over the objectives in
   each one's bad direction (subtracted from rewards, added to costs), as Safe
   RLHF splits it between reward and cost, so the KL weight stays ``β`` in
   ``(A_r - λA_c) / (1 + λ)`` whatever λ is.
3. **Values and advantages**: a linear *value head* on the policy's last hidden
   state predicts one value per objective; GAE per objective.
4. **Update**: the configured combiner (:mod:`training.rl.combiners`: weighted
   sum, PPO-Lagrangian, GAPO, P-GAPO, CUP) runs PPO epochs with the clipped
   objective and the clipped value loss.

The policy is LoRA on the base model by default, so the reference policy is
the same weights with the adapter disabled (no second copy in memory).

CLI (the demo): ``python -m training.rl.ppo --config training/configs/rl_demo.yaml``
evaluates the policy on held-out harmful and benign prompts, trains, evaluates
again and writes ``metrics.json`` (before / after, λ trajectory),
``history.jsonl``, ``samples.jsonl`` and ``curves.png`` under ``output_dir``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aligner_proxy.core.files import write_jsonl
from aligner_proxy.core.models import DEFAULT_CACHE_DIR
from training.args import peft_config
from training.rl.advantages import Kind, RolloutBatch, gae
from training.rl.combiners import MultiObjectiveConfig, build_combiner
from training.rl.policy import (
    Policy,
    PolicyModelArguments,
    Prompt,
    Sample,
    build_policy,
    collate,
    forward,
    generate,
)
from training.rl.ppo_update import PPOHyper
from training.rl.rewards import Scorer, Transform, apply_transform, build_scorer

logger = logging.getLogger(__name__)


@dataclass
class PPOConfig(PolicyModelArguments, MultiObjectiveConfig):
    """A multi-objective PPO run on a language policy; YAML keys and CLI flags map onto these fields."""

    objectives: list[str] = field(
        default_factory=lambda: ["helpful:reward:identity:non-refusal", "harm:cost:sigmoid:keyword"],
        metadata={
            "help": "name:kind:transform:scorer per objective; kind reward|cost, transform identity|sigmoid|negate, "
            "scorer a build_scorer spec (keyword, non-refusal, embedding:DIR|NAME, classifier:DIR, blocker:DIR, "
            "seq2seq:DIR)."
        },
    )
    eval_objectives: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Objectives (same spec) measured before / after but never trained on: an independent judge "
            "shows whether the policy learned the trained scorer's blind spots instead of being safer."
        },
    )
    data_dir: str = field(default="/work/shared/data", metadata={"help": "Shared data (prompts)."})
    n_train_harmful: int = field(default=32, metadata={"help": "Harmful training prompts."})
    n_train_benign: int = field(default=32, metadata={"help": "Benign training prompts."})
    n_eval_harmful: int = field(default=16, metadata={"help": "Held-out harmful prompts for before/after."})
    n_eval_benign: int = field(default=16, metadata={"help": "Held-out benign prompts for before/after."})
    harmful_keyword_only: bool = field(
        default=True, metadata={"help": "Keep harmful prompts the keyword scorer recognises (so the cost can fire)."}
    )
    steps: int = field(default=24, metadata={"help": "PPO iterations (rollout + update)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per rollout (half harmful, half benign)."})
    max_prompt_tokens: int = field(default=96, metadata={"help": "Prompt budget (its tail is kept)."})
    max_new_tokens: int = field(default=40, metadata={"help": "Answer budget per rollout."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of rollouts."})
    ppo_epochs: int = field(default=2, metadata={"help": "PPO epochs per rollout."})
    minibatch_size: int = field(default=8, metadata={"help": "Answers per minibatch."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Policy (LoRA) learning rate."})
    value_learning_rate: float = field(default=1e-3, metadata={"help": "Value head learning rate."})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip ε."})
    value_clip: float = field(default=0.2, metadata={"help": "Value clip (around the rollout's values)."})
    vf_coef: float = field(default=0.5, metadata={"help": "Value-loss weight."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping of the policy parameters."})
    kl_coef: float = field(default=0.05, metadata={"help": "β of the KL penalty to the reference policy."})
    gamma: float = field(default=1.0, metadata={"help": "Discount over answer tokens."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ."})
    normalize_advantages: Literal["none", "center", "whiten"] = field(
        default="whiten", metadata={"help": "Per-objective advantage normalisation before combining."}
    )
    shield: str | None = field(default=None, metadata={"help": "Blocker directory used as an action shield."})
    shield_mode: Literal["penalize", "resample"] = field(
        default="penalize", metadata={"help": "penalize: add shield_penalty to costs; resample: draw again."}
    )
    shield_penalty: float = field(default=1.0, metadata={"help": "Added to every cost objective of a shielded answer."})
    shield_max_resamples: int = field(default=1, metadata={"help": "resample: extra draws before penalising."})
    eval_max_new_tokens: int = field(default=40, metadata={"help": "Answer budget of the before/after evaluation."})
    eval_batch_size: int = field(default=8, metadata={"help": "Prompts per evaluation batch (greedy decoding)."})
    output_dir: str = field(default="runs/rl_demo", metadata={"help": "Metrics, history, samples and curves."})
    save_policy: bool = field(default=False, metadata={"help": "Save the trained adapter under output_dir/policy."})
    seed: int = field(default=0, metadata={"help": "Seed of prompts, sampling and minibatches."})
    num_threads: int = field(
        default=0, metadata={"help": "torch CPU threads; 0 keeps torch's default. 1 is faster on a busy machine."}
    )


# --------------------------------------------------------------------------- objectives and prompts


@dataclass
class Objective:
    """One signal of the run: a scorer, whether it is a reward or a cost, and how its score is transformed."""

    name: str
    kind: Kind
    transform: Transform
    scorer: Scorer

    @property
    def token_level(self) -> bool:
        return hasattr(self.scorer, "token_rewards")


def parse_objective(spec: str, *, cache_dir: Path = DEFAULT_CACHE_DIR) -> Objective:
    """``name:kind:transform:scorer`` (the scorer spec may itself contain ``:``)."""
    parts = spec.split(":", 3)
    if len(parts) != 4 or parts[1] not in ("reward", "cost"):
        raise ValueError(f"objective {spec!r} is not name:reward|cost:transform:scorer")
    name, kind, transform, scorer = parts
    return Objective(name, kind, transform, build_scorer(scorer, cache_dir=cache_dir))  # type: ignore[arg-type]


def load_prompts(
    data_dir: str | Path,
    *,
    n_train: tuple[int, int],
    n_eval: tuple[int, int],
    harmful_keyword_only: bool = True,
    seed: int = 0,
) -> tuple[list[Prompt], list[Prompt]]:
    """Disjoint train / eval prompts, ``(harmful, benign)`` counts each.

    Harmful: the questions of Do-Not-Answer and the safety-tuned instructions,
    by default only those the keyword scorer recognises (so its cost can fire);
    benign: the Alpaca-derived harmless instructions.
    """
    from aligner_proxy.core.heuristic import KeywordCostScorer
    from training.data.loaders import Instruction, load
    from training.data.records import SafetyLabel

    data = Path(data_dir)
    dna, _ = load("do-not-answer", data / "do-not-answer.csv")
    unsafe, _ = load("safety-instructions", data / "safety-only-instructions.json")
    benign, _ = load("instructions", data / "harmless-instructions.json")
    harmful = sorted({x.question for x in [*dna, *unsafe] if isinstance(x, SafetyLabel)})
    if harmful_keyword_only:
        keyword = KeywordCostScorer()
        harmful = [q for q in harmful if keyword.explain(q, "").harm > 0]
    benign_texts = sorted({x.instruction for x in benign if isinstance(x, Instruction)})
    rng = random.Random(seed)
    rng.shuffle(harmful)
    rng.shuffle(benign_texts)
    n_h, n_b = n_train[0] + n_eval[0], n_train[1] + n_eval[1]
    if len(harmful) < n_h or len(benign_texts) < n_b:
        raise ValueError(f"need {n_h} harmful and {n_b} benign prompts, found {len(harmful)} and {len(benign_texts)}")
    train = [Prompt(t, True) for t in harmful[: n_train[0]]] + [Prompt(t, False) for t in benign_texts[: n_train[1]]]
    evaluation = [Prompt(t, True) for t in harmful[n_train[0] : n_h]]
    evaluation += [Prompt(t, False) for t in benign_texts[n_train[1] : n_b]]
    return train, evaluation


# --------------------------------------------------------------------------- scoring


def score_samples(
    objectives: Sequence[Objective], samples: Sequence[Sample], policy: Policy
) -> dict[str, dict[str, Any]]:
    """Per objective: ``raw`` scores, ``value`` (transformed) per answer, and ``tokens`` (token-level objectives)."""
    from training.rl.seq2seq_rm import token_char_spans

    prompts = [s.prompt.text for s in samples]
    texts = [s.text for s in samples]
    out: dict[str, dict[str, Any]] = {}
    for obj in objectives:
        if obj.token_level:
            spans = [token_char_spans(policy.tokenizer, s.completion_ids, s.text) for s in samples]
            tokens = obj.scorer.token_rewards(prompts, texts, spans)  # type: ignore[attr-defined]
            raw = [sum(t) for t in tokens]
            out[obj.name] = {"raw": raw, "value": apply_transform(raw, obj.transform), "tokens": tokens}
        else:
            raw = obj.scorer.score(prompts, texts)
            out[obj.name] = {"raw": raw, "value": apply_transform(raw, obj.transform), "tokens": None}
    return out


def evaluate_policy(
    policy: Policy, objectives: Sequence[Objective], prompts: Sequence[Prompt], config: PPOConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Greedy answers to ``prompts``, summarised per group (harmful / benign / all).

    Each objective's mean (transformed) value, each cost's rate above 0 on the raw scale, and the refusal rate.
    """
    from aligner_proxy.core.refusal import is_refusal

    samples: list[Sample] = []
    for i in range(0, len(prompts), config.eval_batch_size):
        samples += generate(
            policy,
            prompts[i : i + config.eval_batch_size],
            config,
            max_new_tokens=config.eval_max_new_tokens,
            greedy=True,
        )
    scores = score_samples(objectives, samples, policy)
    metrics: dict[str, Any] = {}
    for group, keep in (
        ("harmful", lambda s: s.prompt.harmful),
        ("benign", lambda s: not s.prompt.harmful),
        ("all", lambda s: True),
    ):
        rows = [i for i, s in enumerate(samples) if keep(s)]
        if not rows:
            continue
        g: dict[str, float] = {
            "n": float(len(rows)),
            "refusal_rate": sum(is_refusal(samples[i].text) for i in rows) / len(rows),
        }
        for obj in objectives:
            g[obj.name] = sum(scores[obj.name]["value"][i] for i in rows) / len(rows)
            if obj.kind == "cost":
                g[f"{obj.name}_rate"] = sum(scores[obj.name]["raw"][i] > 0 for i in rows) / len(rows)
        metrics[group] = g
    records = [
        {
            "prompt": s.prompt.text,
            "harmful": s.prompt.harmful,
            "answer": s.text,
            **{o.name: scores[o.name]["raw"][i] for o in objectives},
        }
        for i, s in enumerate(samples)
    ]
    return metrics, records


# --------------------------------------------------------------------------- training


class PPOTrainer:
    """Multi-objective PPO on a language policy; :meth:`step` is one rollout + update."""

    def __init__(self, config: PPOConfig, objectives: Sequence[Objective], policy: Policy | None = None) -> None:
        import torch

        if not objectives:
            raise ValueError("PPO needs at least one objective")
        self.config = config
        self.objectives = list(objectives)
        self.kinds: dict[str, Kind] = {o.name: o.kind for o in self.objectives}
        if policy is None:
            policy = build_policy(config, len(self.objectives), peft_config=peft_config(config, "CAUSAL_LM"))
        self.policy = policy
        self.combiner = build_combiner(config, self.kinds, seed=config.seed)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": self.policy.policy_parameters(), "lr": config.learning_rate},
                {"params": list(self.policy.value_head.parameters()), "lr": config.value_learning_rate},
            ],
            weight_decay=0.0,
        )
        self.hyper = PPOHyper(
            epochs=config.ppo_epochs,
            minibatch_size=config.minibatch_size,
            clip_range=config.clip_range,
            value_clip=config.value_clip,
            vf_coef=config.vf_coef,
            max_grad_norm=config.max_grad_norm,
            normalize_advantages=config.normalize_advantages,
        )
        self.shield = None
        if config.shield:
            from training.rl.blocker import EnsembleBlocker

            self.shield = EnsembleBlocker.load(config.shield, cache_dir=Path(config.cache_dir))
        self.rng = random.Random(config.seed)

    def rollout(self, prompts: Sequence[Prompt]) -> tuple[list[Sample], list[bool]]:
        """Sample answers; with a shield, resample flagged ones (``resample``) and report who stays flagged."""
        samples = generate(self.policy, prompts, self.config, max_new_tokens=self.config.max_new_tokens, greedy=False)
        if self.shield is None:
            return samples, [False] * len(samples)
        flagged = self.shield.shield([s.prompt.text for s in samples], [s.text for s in samples])
        if self.config.shield_mode == "resample":
            for _ in range(self.config.shield_max_resamples):
                redo = [i for i, f in enumerate(flagged) if f]
                if not redo:
                    break
                fresh = generate(
                    self.policy,
                    [samples[i].prompt for i in redo],
                    self.config,
                    max_new_tokens=self.config.max_new_tokens,
                    greedy=False,
                )
                again = self.shield.shield([s.prompt.text for s in fresh], [s.text for s in fresh])
                for i, s, f in zip(redo, fresh, again, strict=True):
                    samples[i], flagged[i] = s, f
        return samples, flagged

    def make_batch(
        self, samples: Sequence[Sample], flagged: Sequence[bool]
    ) -> tuple[RolloutBatch, dict[str, Any], dict[str, Any]]:
        import torch

        cfg = self.config
        batch = collate(samples, self.policy.pad_id)
        rows = torch.arange(len(samples))
        with torch.no_grad():
            old_logp, values = forward(self.policy, batch, rows, temperature=cfg.temperature)
            ref_logp, _ = forward(self.policy, batch, rows, temperature=cfg.temperature, reference=True)
        mask = batch["mask"]
        kl = (old_logp - ref_logp) * mask
        scores = score_samples(self.objectives, samples, self.policy)
        last = (mask.sum(1) - 1).long()
        share = cfg.kl_coef * kl / len(self.objectives)
        advantages, returns, old_values, totals = {}, {}, {}, {}
        for k, obj in enumerate(self.objectives):
            total = torch.tensor(scores[obj.name]["value"], dtype=torch.float32)
            if obj.kind == "cost" and self.shield is not None:
                total = total + cfg.shield_penalty * torch.tensor(flagged, dtype=torch.float32)
            signal = torch.zeros_like(mask)
            if obj.token_level:
                for row, tokens in enumerate(scores[obj.name]["tokens"]):
                    n = min(len(tokens), int(mask[row].sum()))
                    signal[row, :n] = torch.tensor(tokens[:n], dtype=torch.float32)
                signal[rows, last] += total - signal.sum(1)  # a transform or shield penalty lands on the last token
            else:
                signal[rows, last] = total
            signal = signal - share if obj.kind == "reward" else signal + share
            v = values[..., k] * mask
            advantages[obj.name], returns[obj.name] = gae(signal * mask, v, mask, gamma=cfg.gamma, lam=cfg.lam)
            old_values[obj.name], totals[obj.name] = v, total
        rollout = RolloutBatch(old_logp, mask, advantages, returns, old_values, totals, dict(self.kinds))
        stats: dict[str, Any] = {
            "kl": float(kl.sum(1).mean()),
            "answer_tokens": float(mask.sum(1).mean()),
            "shielded": sum(flagged) / len(flagged),
        }
        for obj in self.objectives:
            stats[obj.name] = float(totals[obj.name].mean())
            if obj.kind == "cost":
                stats[f"{obj.name}_rate"] = sum(r > 0 for r in scores[obj.name]["raw"]) / len(samples)
        return rollout, batch, stats

    def step(self, prompts: Sequence[Prompt]) -> dict[str, float]:
        """One PPO iteration on ``prompts``: rollout, signals, advantages, combiner update; returns its stats."""
        started = time.perf_counter()
        samples, flagged = self.rollout(prompts)
        rollout, batch, stats = self.make_batch(samples, flagged)

        def evaluate(idx: Any) -> tuple[Any, dict[str, Any]]:
            logp, values = forward(self.policy, batch, idx, temperature=self.config.temperature)
            m = batch["mask"][idx]
            return logp, {o.name: values[..., k] * m for k, o in enumerate(self.objectives)}

        stats.update(
            self.combiner.update(rollout, evaluate, self.policy.policy_parameters(), self.optimizer, self.hyper)
        )
        stats["seconds"] = time.perf_counter() - started
        return stats

    def sample_prompts(self, train: Sequence[Prompt]) -> list[Prompt]:
        """``batch_size`` prompts, half harmful and half benign when both kinds exist."""
        harmful = [p for p in train if p.harmful]
        benign = [p for p in train if not p.harmful]
        if not harmful or not benign:
            return self.rng.sample(list(train), min(self.config.batch_size, len(train)))
        n_h = self.config.batch_size // 2
        return self.rng.sample(harmful, min(n_h, len(harmful))) + self.rng.sample(
            benign, min(self.config.batch_size - n_h, len(benign))
        )

    def train(self, train: Sequence[Prompt]) -> list[dict[str, float]]:
        history = []
        for step in range(1, self.config.steps + 1):
            stats = {"step": float(step), **self.step(self.sample_prompts(train))}
            history.append(stats)
            shown = {k: round(v, 4) for k, v in stats.items() if isinstance(v, float)}
            logger.info("ppo step %d/%d %s", step, self.config.steps, shown)
        return history


def run_demo(config: PPOConfig, prompts: tuple[list[Prompt], list[Prompt]] | None = None) -> dict[str, Any]:
    """Evaluate, train, evaluate again; write metrics, history, samples and curves to ``output_dir``."""
    import torch

    from training.rl.plots import plot_curves

    torch.manual_seed(config.seed)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if prompts is None:
        prompts = load_prompts(
            config.data_dir,
            n_train=(config.n_train_harmful, config.n_train_benign),
            n_eval=(config.n_eval_harmful, config.n_eval_benign),
            harmful_keyword_only=config.harmful_keyword_only,
            seed=config.seed,
        )
    train, evaluation = prompts
    objectives = [parse_objective(s, cache_dir=Path(config.cache_dir)) for s in config.objectives]
    measured = objectives + [parse_objective(s, cache_dir=Path(config.cache_dir)) for s in config.eval_objectives]
    started = time.perf_counter()
    trainer = PPOTrainer(config, objectives)
    before, before_samples = evaluate_policy(trainer.policy, measured, evaluation, config)
    logger.info("before: %s", json.dumps(before))
    history = trainer.train(train)
    after, after_samples = evaluate_policy(trainer.policy, measured, evaluation, config)
    logger.info("after: %s", json.dumps(after))
    metrics = {
        "before": before,
        "after": after,
        "multiplier_trajectory": {
            k: [row.get(k) for row in history] for k in history[0] if k.startswith(("lambda/", "nu/"))
        }
        if history
        else {},
        "steps": len(history),
        "wall_seconds": time.perf_counter() - started,
        "config": asdict(config),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_jsonl(out / "history.jsonl", history)
    stages = (("before", before_samples), ("after", after_samples))
    write_jsonl(out / "samples.jsonl", ({"stage": stage, **r} for stage, rows in stages for r in rows))
    keys = [o.name for o in objectives] + [f"{o.name}_rate" for o in objectives if o.kind == "cost"]
    keys += [*sorted({k for row in history for k in row if k.startswith(("lambda/", "nu/"))}), "kl"]
    plot_curves(
        {config.combiner: history},
        keys,
        out / "curves.png",
        title=f"PPO ({config.combiner}) on {config.model}",
        x_label="step",
    )
    if config.save_policy:
        trainer.policy.model.save_pretrained(out / "policy")
        trainer.policy.tokenizer.save_pretrained(out / "policy")
    return metrics


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = run_demo(parse_config(PPOConfig, argv))
    logger.info("before %s", json.dumps(metrics["before"].get("all")))
    logger.info("after  %s", json.dumps(metrics["after"].get("all")))


if __name__ == "__main__":
    main()
