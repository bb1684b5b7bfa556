"""Dispatch: the agent loop, its tools, redaction and workers."""

from __future__ import annotations

from arbe_core.dispatch.redact import Redactor, cut_middle
from arbe_core.dispatch.runner import DispatchFailed, DispatchRunner
from arbe_core.dispatch.worker import Worker

__all__ = ["DispatchFailed", "DispatchRunner", "Redactor", "Worker", "cut_middle"]
