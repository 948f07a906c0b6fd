"""The vLLM backend: its import gate, its pure helpers, and its wiring against a fake engine."""

from __future__ import annotations

import enum
import subprocess
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aligner_proxy.core.backends import BackendError, BackendUnavailableError
from aligner_proxy.core.backends.vllm import VLLMGenerator, finish_reason, sampling_kwargs
from aligner_proxy.core.generation import ChatGenerator, ChatMessage, Generation, GenerationParams


def test_importing_the_module_does_not_import_vllm() -> None:
    checks = "assert 'vllm' not in sys.modules; assert 'torch' not in sys.modules"
    code = f"import sys, aligner_proxy.core.backends.vllm; {checks}"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_vllm_loading_raises_a_clear_backend_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(BackendUnavailableError, match="pip install vllm") as caught:
        VLLMGenerator.load("aligner/aligner-7b-v1.0", cache_dir=tmp_path)
    assert isinstance(caught.value, BackendError)
    with pytest.raises(BackendUnavailableError):
        VLLMGenerator(engine=object(), tokenizer=object(), model_id="m")


def test_sampling_kwargs() -> None:
    assert sampling_kwargs(GenerationParams()) == {"max_tokens": 256, "temperature": 0.0, "top_p": 1.0, "seed": None}
    params = GenerationParams(max_new_tokens=9, temperature=0.7, top_p=0.8, stop=("\n\n", "USER:"), seed=5)
    assert sampling_kwargs(params) == {
        "max_tokens": 9,
        "temperature": 0.7,
        "top_p": 0.8,
        "seed": 5,
        "stop": ["\n\n", "USER:"],
    }
    assert sampling_kwargs(GenerationParams(top_p=0.5))["top_p"] == 1.0  # greedy ignores nucleus sampling


def test_finish_reason() -> None:
    assert finish_reason("length") == "length"
    assert [finish_reason(r) for r in ("stop", "abort", None)] == ["stop", "stop", "stop"]


class FakeEngine:
    """Mimics ``AsyncLLM.generate``: an async generator of RequestOutput-like objects."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any, str]] = []
        self.closed: list[str] = []

    async def generate(self, prompt: str, sampling: Any, request_id: str) -> AsyncIterator[Any]:
        self.requests.append((prompt, sampling, request_id))
        pieces = ["Sure", ",", " here", " is", " help"]
        try:
            if sampling.kwargs["output_kind"].name == "DELTA":
                for piece in pieces:
                    yield _output(piece, finished=False)
            else:
                yield _output(prompt.upper() + "".join(pieces), finished=True, reason="length")
        finally:
            self.closed.append(request_id)  # vLLM aborts a request whose generator is closed


def _output(text: str, *, finished: bool, reason: str | None = None) -> SimpleNamespace:
    completion = SimpleNamespace(text=text, token_ids=list(range(len(text))), finish_reason=reason)
    return SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[completion], finished=finished)


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    sampling_params = types.ModuleType("vllm.sampling_params")
    sampling_params.RequestOutputKind = RequestOutputKind  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling_params)
    return vllm


@pytest.fixture
def generator(fake_vllm: types.ModuleType, tiny_lm_dir: Path) -> VLLMGenerator:
    from transformers import AutoTokenizer

    return VLLMGenerator(FakeEngine(), AutoTokenizer.from_pretrained(tiny_lm_dir), model_id="aligner")


async def test_generate_submits_one_request_per_prompt(generator: VLLMGenerator) -> None:
    assert isinstance(generator, ChatGenerator)
    params = GenerationParams(max_new_tokens=5, stop=("\n",))
    results = await generator.generate(["a", "b"], params)
    text = "Sure, here is help"
    assert results == [
        Generation("A" + text, 3, 1 + len(text), "length"),
        Generation("B" + text, 3, 1 + len(text), "length"),
    ]
    engine: FakeEngine = generator._engine
    assert [r[0] for r in engine.requests] == ["a", "b"]
    assert len({r[2] for r in engine.requests}) == 2  # distinct request ids
    sampling = engine.requests[0][1].kwargs
    assert sampling["output_kind"].name == "FINAL_ONLY"
    assert sampling["max_tokens"] == 5 and sampling["stop"] == ["\n"]


async def test_stream_yields_deltas_and_closing_it_aborts_the_request(generator: VLLMGenerator) -> None:
    deltas = [d async for d in generator.stream("q", GenerationParams())]
    assert "".join(deltas) == "Sure, here is help"
    stream = generator.stream("q", GenerationParams())
    assert await anext(stream) == "Sure"
    await stream.aclose()  # type: ignore[attr-defined]
    engine: FakeEngine = generator._engine
    assert engine.closed[-1] == engine.requests[-1][2]


def test_tokenizer_helpers(generator: VLLMGenerator) -> None:
    assert generator.render_chat([ChatMessage("user", "Hi")]).endswith("<|im_start|>assistant\n")
    assert "<|im_end|>" in generator.special_tokens
    assert generator.count_tokens("Hello world") > 0
