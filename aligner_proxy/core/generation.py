"""The text-generation interface shared by the corrector and the embedded upstream.

Every backend (in-process transformers, a remote OpenAI-compatible completions
server, in-process vLLM) implements :class:`TextGenerator`. The interface is
async because the proxy calls it from the event loop: in-process backends run
their model work in a worker thread and batch the calls that arrive together,
remote backends simply await HTTP. Offline callers (batch tools, training,
evals) can use :func:`generate_sync`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "loop"]
"""``loop``: cut where the output closed a repetition loop (``GenerationParams.stop_loops``, core.loops)."""


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the text (CTRL's penalty); 1 = off
    stop_loops: bool = False  # end a greedy output where it closes a repetition loop (core.loops); local models only


@dataclass
class Generation:
    """One finished generation with its token accounting."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason = "stop"


@dataclass
class ChatMessage:
    """A chat turn as the core sees it (the wire format lives in ``protocol.py``)."""

    role: str
    content: str
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class TextGenerator(Protocol):
    """A model that continues raw text prompts.

    ``generate`` must be safe to call concurrently from many coroutines; an
    in-process backend is expected to batch such calls together.
    """

    @property
    def model_id(self) -> str: ...

    async def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]: ...

    def stream(self, prompt: str, params: GenerationParams) -> AsyncGenerator[str, None]:
        """Yield text deltas of one generation as the model produces them."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int, keep: Literal["head", "tail"] = "head") -> str:
        """Cut ``text`` to at most ``max_tokens`` tokens, keeping its head or tail."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ChatGenerator(TextGenerator, Protocol):
    """A generator that can also render chat messages with its own chat template."""

    def render_chat(self, messages: list[ChatMessage]) -> str: ...
