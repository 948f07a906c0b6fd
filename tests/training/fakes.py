"""A fake corpus generator shared by the answer-cache and corpus tests: no model, deterministic answers."""

from __future__ import annotations

from collections.abc import Sequence

from aligner_proxy.core.generation import ChatMessage, Generation, GenerationParams


class Killed(Exception):
    """Stands for the process dying in the middle of a generation run."""


class FakeGenerator:
    """Answers ``"<answer to X>"``, refuses instructions containing 'refuse-me', and can die after N batches."""

    model_id = "fake-lm"

    def __init__(self, *, die_after_batches: int | None = None) -> None:
        self.die_after_batches = die_after_batches
        self.batches: list[list[str]] = []

    def render_chat(self, messages: list[ChatMessage]) -> str:
        return f"<user>{messages[-1].content}<assistant>"

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        if self.die_after_batches is not None and len(self.batches) >= self.die_after_batches:
            raise Killed
        self.batches.append(list(prompts))
        out = []
        for prompt in prompts:
            instruction = prompt.removeprefix("<user>").removesuffix("<assistant>")
            text = "I'm sorry, I can't help with that." if "refuse-me" in instruction else f"<answer to {instruction}>"
            out.append(Generation(text=text, prompt_tokens=3, completion_tokens=5))
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def prompts_seen(self) -> list[str]:
        return [p for batch in self.batches for p in batch]
