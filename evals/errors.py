"""The harness's exceptions: the CLI catches :class:`EvalError` and prints its message."""

from __future__ import annotations


class EvalError(Exception):
    """Something the user can fix: a bad config, an unknown name, an unreachable target."""


class ConfigError(EvalError):
    """An eval config, task file or prompt file that cannot be used as written."""


class UnknownNameError(ConfigError):
    """A task, metric or format name that no registry knows."""


class TargetError(EvalError):
    """A target that could not be reached or answered with something that is not a chat completion."""
