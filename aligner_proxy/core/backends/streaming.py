"""Steering a transformers ``generate`` call: stop strings on streamed text, the token sink, the stopping criteria.

``generate`` runs on a worker thread; :class:`TokenStream` posts its text
deltas to the event loop, :class:`CancelCriterion` ends it once the consumer
has gone, :class:`LoopCriterion` once a row's output closes a repetition loop,
and :class:`StopScanner` applies stop strings to the deltas without ever
emitting part of one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from aligner_proxy.core.loops import LoopGuard


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded), and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class StopScanner:
    """Apply stop strings to streamed text without ever emitting part of one.

    Text that could be the beginning of a stop string is held back until the
    next delta shows whether it is; :meth:`flush` releases it at the end.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = [s for s in stop if s]
        self._pending = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self._pending += delta
        cut, found = cut_at_stop(self._pending, self._stop)
        if found:
            self.stopped, self._pending = True, ""
            return cut
        hold = max((k for s in self._stop for k in range(1, len(s)) if self._pending.endswith(s[:k])), default=0)
        emit = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(emit) :]
        return emit

    def flush(self) -> str:
        rest, self._pending = ("" if self.stopped else self._pending), ""
        return rest


class TokenStream:
    """A ``generate(streamer=...)`` sink that posts text deltas to the event loop.

    transformers' ``TextIteratorStreamer`` emits whole words and can emit a
    U+FFFD for a UTF-8 character split across tokens; here the completion is
    re-decoded each step and only its stable part is sent (trailing U+FFFD
    held back), so the deltas always concatenate to the final decoded text.
    """

    def __init__(self, tokenizer: Any, post: Callable[[str | None], None]) -> None:
        self._tokenizer = tokenizer
        self._post = post
        self._ids: list[int] = []
        self._sent = 0
        self._prompt_seen = False
        self._closed = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        self._ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self._decode()
        stable = len(text.rstrip("\ufffd"))
        if stable > self._sent:
            self._post(text[self._sent : stable])
            self._sent = stable

    def end(self) -> None:
        text = self._decode()
        if len(text) > self._sent:
            self._post(text[self._sent :])
            self._sent = len(text)
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._post(None)

    def _decode(self) -> str:
        return str(self._tokenizer.decode(self._ids, skip_special_tokens=True))


class CancelCriterion:
    """A stopping criterion that ends generation once ``event`` is set (the stream's consumer left)."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device)


class LoopCriterion:
    """A stopping criterion that ends each row once its generated tokens end in a loop (``guard``).

    ``prompt_width`` is where generation starts in every row (prompts are left-padded to one width)."""

    def __init__(self, guard: LoopGuard, prompt_width: int) -> None:
        self._guard = guard
        self._width = prompt_width

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = input_ids[:, self._width :].tolist()
        done = [self._guard.ends_in_loop(row) for row in rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
