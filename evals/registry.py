"""A small name → object registry whose entries are found in files (as lm-evaluation-harness does).

Metrics register themselves with a decorator in any module of
:mod:`evals.metrics` (found by :func:`import_modules`); tasks are YAML files in
``evals/tasks/``. A registry runs its ``discover`` step the first time a name is
looked up, so adding a metric or a task is adding a file, and nothing is
imported or read before it is needed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from evals.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of one kind by name. ``discover`` is called once, before the first lookup, to fill it."""

    def __init__(self, kind: str, discover: Callable[[Registry[T]], None] | None = None) -> None:
        self.kind = kind
        self._discover_fn = discover
        self._items: dict[str, T] = {}
        self._discovered = discover is None

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a second item with the same name is an error, not an override."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        self._discover()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def _discover(self) -> None:
        if self._discovered or self._discover_fn is None:
            return
        self._discovered = True
        self._discover_fn(self)


def import_modules(package: str) -> Callable[[Registry[T]], None]:
    """A ``discover`` step that imports every public module of ``package`` (they register themselves)."""

    def discover(_registry: Registry[T]) -> None:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")

    return discover
