"""Helpers for the security tests: plugin overrides and in-process dispatch."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from arbe_adapters.plugins import Plugins, load_plugins
from arbe_adapters.plugins.hookspecs import Register, hookimpl
from arbe_core.models import Dispatch, Entry
from arbe_entry import Arbe
from arbe_entry.config import Settings
from tests.helpers import ARBE_SCRIPT, arbe_env

#: Seconds a test waits for a subprocess or a dispatch before it fails.
WAIT_S = 30.0


class Overrides:
    """A plugin that replaces built-in runtimes or providers with tuned ones.

    Args:
        runtimes: runtime name to `(factory, credential)`.
        providers: provider name to `(factory, credential)`.
    """

    def __init__(
        self,
        runtimes: Mapping[str, tuple[Callable[..., Any], str | None]] | None = None,
        providers: Mapping[str, tuple[Callable[..., Any], str | None]] | None = None,
    ) -> None:
        self.runtimes = dict(runtimes or {})
        self.providers = dict(providers or {})

    @hookimpl
    def register_runtimes(self, register: Register) -> None:
        for name, (factory, credential) in self.runtimes.items():
            register(name, factory, credential=credential, description="test")

    @hookimpl
    def register_providers(self, register: Register) -> None:
        for name, (factory, credential) in self.providers.items():
            register(name, factory, credential=credential, description="test")


def open_with(home: Path, overrides: Overrides | None = None) -> Arbe:
    """Open the default house of `home` with the built-in plugins and `overrides`."""
    plugins: Plugins = load_plugins("", extra=[overrides] if overrides else None)
    return Arbe(Settings.from_env(home=home), plugins=plugins)


def dispatch(
    opened: Arbe,
    text: str,
    env: str | None = "demo",
    model: str | None = "builtin/shell",
) -> tuple[str, list[Entry], Dispatch]:
    """Post `text` to a new thread and run its dispatch in this process.

    Returns:
        The thread id, its entries and its dispatch at the end.
    """
    thread = opened.threads.create(env=env, model=model)
    opened.threads.post(thread.id, text)
    opened.worker(lease_s=30).run(once=True)
    finished = opened.threads.dispatch(thread.id)
    assert finished is not None
    return thread.id, opened.threads.entries(thread.id, limit=10_000), finished


def start_arbe(
    *args: str, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the `arbe` console script in its own process group, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(ARBE_SCRIPT), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=arbe_env(env),
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill a process started by `start_arbe` and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(WAIT_S)


def wait_for(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll `check` every 20 ms until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)
