"""An ensemble blocker: cost heads trained on human block labels, whose disagreement is an uncertainty.

"Trial without Error" (Saunders et al., AAMAS 2018) trains a *blocker* to
imitate a human who blocks catastrophic actions, then lets it stand in for the
human during RL. Prakash et al. ("Improving Safety in Reinforcement Learning
Using Model-Based Architectures and Human Intervention", FLAIRS 2019) make the
blocker an ensemble and treat its disagreement as epistemic uncertainty:
where the members disagree, the blocker has not seen enough and the safe
action is taken instead. Applied to answers:

- **confident unsafe** (members agree, mean cost > ``block_threshold``) → ``block``;
- **uncertain** (member spread ≥ ``uncertainty_threshold``) → ``correct``:
  fall back to the safe action, rewriting the answer with the Aligner;
- otherwise → ``allow``.

The members are small MLP cost heads (logit scale, > 0 unsafe) on features of
the (question, answer) pair, trained on Do-Not-Answer's human ``harmful``
labels (``/work/shared/data/do-not-answer.csv``, split by question) with a
class-balanced logistic loss, each on its own bootstrap resample and from its
own initialisation (deep ensembles, Lakshminarayanan et al., NeurIPS 2017).
Each member adds a fixed random *prior* network (Osband et al., NeurIPS 2018,
randomized prior functions), so members disagree wherever the data did not
pull them together: off-distribution inputs get a larger spread.
``uncertainty_threshold`` is a quantile of the spread on the validation split.

Features: ``hashing`` (word uni+bigrams hashed separately for question and
answer, log counts, L2-normalised; no model, microseconds) or ``minilm`` (the
frozen all-MiniLM-L6-v2 embedding of :func:`format_scoring_text`, as
:class:`~aligner_proxy.core.backends.embedding.EmbeddingHeadScorer` uses).

:class:`EnsembleBlocker` is a :class:`~aligner_proxy.core.scorer.CostScorer`: its cost
is the ensemble mean, raised to at least ``uncertain_cost`` (> 0) when it is
uncertain, so the proxy's gate (cost > 0 → correct; with ``block`` on, still
> 0 after correction → block) carries out the same three decisions. During RL
:meth:`EnsembleBlocker.shield` flags samples to penalise or resample.

CLI: ``python -m training.rl.blocker --config training/configs/rl_blocker.yaml``.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aligner_proxy.core.models import DEFAULT_CACHE_DIR

logger = logging.getLogger(__name__)

WEIGHTS = "blocker.safetensors"
CONFIG = "blocker_config.json"
Decision = Literal["allow", "correct", "block"]
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class BlockerConfig:
    """Training recipe and serving thresholds of the blocker; YAML keys and CLI flags map onto these fields."""

    data_file: str = field(
        default="/work/shared/data/do-not-answer.csv", metadata={"help": "Do-Not-Answer CSV (human harmful labels)."}
    )
    output_dir: str = field(default="runs/blocker", metadata={"help": "Where the blocker and metrics go."})
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "Model cache (minilm encoder)."})
    featurizer: Literal["hashing", "minilm"] = field(default="hashing", metadata={"help": "hashing | minilm."})
    hash_dim: int = field(default=2048, metadata={"help": "hashing: buckets per field (question, answer)."})
    n_members: int = field(default=5, metadata={"help": "Ensemble size."})
    hidden_dim: int = field(default=64, metadata={"help": "Hidden width of each member (and prior)."})
    prior_scale: float = field(default=1.0, metadata={"help": "Weight of each member's fixed random prior net."})
    bootstrap: bool = field(default=True, metadata={"help": "Train each member on its own bootstrap resample."})
    epochs: int = field(default=20, metadata={"help": "Epochs per member."})
    batch_size: int = field(default=64, metadata={"help": "Rows per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    validation_fraction: float = field(default=0.2, metadata={"help": "Share of *questions* held out."})
    uncertainty_quantile: float = field(
        default=0.95, metadata={"help": "uncertainty_threshold = this quantile of the validation spread."}
    )
    block_threshold: float = field(default=0.0, metadata={"help": "Confident mean cost above this → block."})
    uncertain_cost: float = field(default=1.0, metadata={"help": "Lowest cost reported for an uncertain pair (> 0)."})
    seed: int = field(default=0, metadata={"help": "Seed of the split, inits, bootstraps and priors."})


# --------------------------------------------------------------------------- features


class HashingFeaturizer:
    """Word uni+bigrams hashed (CRC32, signed) into ``dim`` buckets per field; log counts, L2-normalised."""

    def __init__(self, dim: int = 2048) -> None:
        self.dim = dim

    @property
    def out_dim(self) -> int:
        return 2 * self.dim

    def spec(self) -> dict[str, Any]:
        return {"kind": "hashing", "dim": self.dim}

    def _field(self, text: str) -> Any:
        import torch

        words = _WORD.findall(text.lower())
        grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        hashes = [zlib.crc32(g.encode("utf-8")) for g in grams]
        vec = torch.zeros(self.dim)
        if hashes:
            index = torch.tensor([h % self.dim for h in hashes])
            signs = torch.tensor([1.0 if (h >> 31) & 1 else -1.0 for h in hashes])
            vec.index_add_(0, index, signs)
        vec = torch.sign(vec) * torch.log1p(vec.abs())
        return vec / vec.norm().clamp(min=1e-8)

    def __call__(self, prompts: list[str], completions: list[str]) -> Any:
        import torch

        return torch.stack(
            [torch.cat([self._field(p), self._field(c)]) for p, c in zip(prompts, completions, strict=True)]
        )


class EncoderFeaturizer:
    """The frozen sentence encoder of the embedding scorer (``minilm``) on the scoring text."""

    def __init__(self, encoder_spec: str = "minilm", *, cache_dir: Path = DEFAULT_CACHE_DIR, batch_size: int = 32):
        from aligner_proxy.core.backends.embedding import TextEncoder

        self.encoder_spec = encoder_spec
        self.encoder = TextEncoder.load(encoder_spec, cache_dir=cache_dir)
        self.batch_size = batch_size

    @property
    def out_dim(self) -> int:
        return int(self.encoder.dim)

    def spec(self) -> dict[str, Any]:
        return {"kind": "minilm", "encoder": self.encoder_spec}

    def __call__(self, prompts: list[str], completions: list[str]) -> Any:
        return self.encoder.encode(prompts, completions, batch_size=self.batch_size).float()


def make_featurizer(spec: dict[str, Any], *, cache_dir: Path = DEFAULT_CACHE_DIR) -> Any:
    if spec["kind"] == "hashing":
        return HashingFeaturizer(int(spec["dim"]))
    if spec["kind"] == "minilm":
        return EncoderFeaturizer(spec.get("encoder", "minilm"), cache_dir=cache_dir)
    raise ValueError(f"unknown featurizer {spec!r}")


# --------------------------------------------------------------------------- the ensemble


def build_ensemble(in_dim: int, n_members: int, hidden_dim: int, prior_scale: float, seed: int = 0) -> Any:
    """``n_members`` MLP cost heads, each plus a frozen random prior MLP; ``forward(x) -> [n, members]`` logits."""
    import torch
    from torch import nn

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    class CostEnsemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.members = nn.ModuleList(mlp() for _ in range(n_members))
            self.priors = nn.ModuleList(mlp() for _ in range(n_members))
            self.priors.requires_grad_(False)
            self.prior_scale = prior_scale

        def calibrate_priors(self, x: Any) -> None:
            """Shift and scale each prior to zero mean and unit spread on ``x`` (the training features), so that
            ``prior_scale`` reads as the prior's logit spread whatever the features (default inits give ~0.05)."""
            with torch.no_grad():
                for prior in self.priors:
                    out = prior(x)
                    last: Any = list(prior.children())[-1]
                    last.bias -= out.mean()
                    spread = out.std().clamp(min=1e-6)
                    last.weight /= spread
                    last.bias /= spread

        def member(self, k: int, x: Any) -> Any:
            return (self.members[k](x) + self.prior_scale * self.priors[k](x))[:, 0]

        def forward(self, x: Any) -> Any:
            return torch.stack([self.member(k, x) for k in range(len(self.members))], dim=1)

    return CostEnsemble()


@dataclass
class Assessment:
    """The blocker's view of one pair: ensemble mean and spread of the cost logits, and the decision."""

    mean: float
    std: float
    decision: Decision


class EnsembleBlocker:
    """Ensemble cost model with uncertainty-aware decisions; a :class:`~aligner_proxy.core.scorer.CostScorer`."""

    def __init__(
        self,
        featurizer: Any,
        ensemble: Any,
        *,
        uncertainty_threshold: float,
        block_threshold: float = 0.0,
        uncertain_cost: float = 1.0,
        model_id: str = "ensemble-blocker",
        batch_size: int = 64,
    ) -> None:
        if uncertain_cost <= 0:
            raise ValueError("uncertain_cost must be > 0 so that uncertain answers pass the proxy's gate")
        self.featurizer = featurizer
        self.ensemble = ensemble.eval()
        self.uncertainty_threshold = uncertainty_threshold
        self.block_threshold = block_threshold
        self.uncertain_cost = uncertain_cost
        self._model_id = model_id
        self.batch_size = batch_size

    @property
    def model_id(self) -> str:
        return self._model_id

    def logits(self, prompts: list[str], completions: list[str]) -> Any:
        """Every member's cost logit, ``[n, members]``."""
        import torch

        parts = []
        with torch.inference_mode():
            for i in range(0, len(prompts), self.batch_size):
                x = self.featurizer(prompts[i : i + self.batch_size], completions[i : i + self.batch_size])
                parts.append(self.ensemble(x))
        return torch.cat(parts) if parts else torch.zeros(0, len(self.ensemble.members))

    def assess(self, prompts: list[str], completions: list[str]) -> list[Assessment]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        logits = self.logits(prompts, completions)
        means, stds = logits.mean(dim=1).tolist(), logits.std(dim=1, unbiased=False).tolist()
        return [Assessment(m, s, self._decide(m, s)) for m, s in zip(means, stds, strict=True)]

    def _decide(self, mean: float, std: float) -> Decision:
        if std >= self.uncertainty_threshold:
            return "correct"
        return "block" if mean > self.block_threshold else "allow"

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        """Ensemble mean cost, at least ``uncertain_cost`` when uncertain (so the proxy corrects it)."""
        return [
            max(a.mean, self.uncertain_cost) if a.decision == "correct" else a.mean
            for a in self.assess(prompts, completions)
        ]

    def shield(self, prompts: list[str], completions: list[str]) -> list[bool]:
        """Which samples an RL loop should not take as they are (decision ``block`` or ``correct``)."""
        return [a.decision != "allow" for a in self.assess(prompts, completions)]

    # -- persistence

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.ensemble.state_dict().items()}, str(out / WEIGHTS))
        meta = {
            "featurizer": self.featurizer.spec(),
            "in_dim": self.featurizer.out_dim,
            "n_members": len(self.ensemble.members),
            "hidden_dim": self.ensemble.members[0][0].out_features,
            "prior_scale": self.ensemble.prior_scale,
            "uncertainty_threshold": self.uncertainty_threshold,
            "block_threshold": self.block_threshold,
            "uncertain_cost": self.uncertain_cost,
        }
        (out / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, *, cache_dir: Path = DEFAULT_CACHE_DIR) -> EnsembleBlocker:
        from safetensors.torch import load_file

        path = Path(directory)
        meta = json.loads((path / CONFIG).read_text())
        ensemble = build_ensemble(meta["in_dim"], meta["n_members"], meta["hidden_dim"], meta["prior_scale"])
        ensemble.load_state_dict(load_file(str(path / WEIGHTS)))
        return cls(
            make_featurizer(meta["featurizer"], cache_dir=cache_dir),
            ensemble,
            uncertainty_threshold=meta["uncertainty_threshold"],
            block_threshold=meta["block_threshold"],
            uncertain_cost=meta["uncertain_cost"],
            model_id=f"blocker:{path}",
        )


# --------------------------------------------------------------------------- training


def fit_ensemble(features: Any, labels: Any, config: BlockerConfig) -> Any:
    """Train each member on its bootstrap resample with a class-balanced logistic loss; returns the ensemble."""
    import torch

    ensemble = build_ensemble(features.shape[1], config.n_members, config.hidden_dim, config.prior_scale, config.seed)
    ensemble.calibrate_priors(features)
    n = features.shape[0]
    positives = float(labels.sum())
    pos_weight = torch.tensor((n - positives) / max(positives, 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    generator = torch.Generator().manual_seed(config.seed)
    for k in range(config.n_members):
        rows = torch.randint(0, n, (n,), generator=generator) if config.bootstrap else torch.arange(n)
        optimizer = torch.optim.AdamW(
            ensemble.members[k].parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        for _ in range(config.epochs):
            order = rows[torch.randperm(n, generator=generator)]
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                loss = loss_fn(ensemble.member(k, features[idx]), labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return ensemble.eval()


def split_by_question(items: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Train / validation split on distinct questions, so no question's answers land on both sides."""
    questions = sorted({x.question for x in items})
    held = set(random.Random(seed).sample(questions, round(fraction * len(questions))))
    return [x for x in items if x.question not in held], [x for x in items if x.question in held]


def gibberish(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Off-distribution probe pairs: random lower-case 'words' that share no vocabulary with real text."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(
            "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(4, 9))) for _ in range(words)
        )

    return [text(12) for _ in range(n)], [text(40) for _ in range(n)]


def train_blocker(config: BlockerConfig) -> Path:
    """Train on Do-Not-Answer, calibrate the uncertainty threshold on validation, save and write ``metrics.json``."""
    import torch
    from sklearn.metrics import roc_auc_score

    from training.data.loaders import load

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, _report = load("do-not-answer", config.data_file)
    train, validation = split_by_question(labels, config.validation_fraction, config.seed)
    featurizer = (
        HashingFeaturizer(config.hash_dim)
        if config.featurizer == "hashing"
        else EncoderFeaturizer(cache_dir=Path(config.cache_dir))
    )
    started = time.perf_counter()
    x_train = featurizer([r.question for r in train], [r.answer for r in train])
    y_train = torch.tensor([0.0 if r.is_safe else 1.0 for r in train])
    logger.info(
        "featurised %d training pairs (%d harmful) in %.1fs",
        len(train),
        int(y_train.sum()),
        time.perf_counter() - started,
    )
    ensemble = fit_ensemble(x_train, y_train, config)
    wall = time.perf_counter() - started
    blocker = EnsembleBlocker(
        featurizer,
        ensemble,
        uncertainty_threshold=float("inf"),
        block_threshold=config.block_threshold,
        uncertain_cost=config.uncertain_cost,
    )
    val = blocker.assess([r.question for r in validation], [r.answer for r in validation])
    spreads = torch.tensor([a.std for a in val])
    blocker.uncertainty_threshold = float(torch.quantile(spreads, config.uncertainty_quantile))
    val = blocker.assess([r.question for r in validation], [r.answer for r in validation])
    harmful = [0 if r.is_safe else 1 for r in validation]
    probe = blocker.assess(*gibberish(200, config.seed))
    decisions = [a.decision for a in val]
    flagged = [d != "allow" for d in decisions]
    metrics = {
        "n_train": len(train),
        "n_validation": len(validation),
        "harmful_share_validation": sum(harmful) / max(len(harmful), 1),
        "auroc": float(roc_auc_score(harmful, [a.mean for a in val])) if 0 < sum(harmful) < len(harmful) else None,
        "accuracy_at_block_threshold": sum(
            (a.mean > config.block_threshold) == bool(h) for a, h in zip(val, harmful, strict=True)
        )
        / max(len(val), 1),
        "harmful_recall_block_or_correct": sum(f for f, h in zip(flagged, harmful, strict=True) if h)
        / max(sum(harmful), 1),
        "decisions_validation": {d: decisions.count(d) for d in ("allow", "correct", "block")},
        "uncertainty_threshold": blocker.uncertainty_threshold,
        "mean_spread_validation": float(spreads.mean()),
        "mean_spread_gibberish": sum(a.std for a in probe) / len(probe),
        "gibberish_sent_to_corrector": sum(a.decision == "correct" for a in probe) / len(probe),
        "train_seconds": wall,
        "recipe": asdict(config),
    }
    blocker.save(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("blocker written to %s: %s", out, {k: v for k, v in metrics.items() if k != "recipe"})
    return out


def main(argv: list[str] | None = None) -> None:
    from training.trainers import parse_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_blocker(parse_config(BlockerConfig, argv))


if __name__ == "__main__":
    main()
