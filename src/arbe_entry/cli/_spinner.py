"""A progress spinner on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

_FRAMES = "|/-\\"


@contextlib.contextmanager
def spinner(message: str) -> Iterator[Callable[[str], None]]:
    """Show `message` with a spinner on stderr while the block runs.

    Yields a function that replaces the message. Off a terminal, each
    message is printed once on stderr instead, so logs stay readable and
    stdout is never touched.
    """
    current = [message]
    if not sys.stderr.isatty():
        sys.stderr.write(f"{message}...\n")

        def update_plain(text: str) -> None:
            sys.stderr.write(f"{text}...\n")

        yield update_plain
        return

    done = threading.Event()

    def spin() -> None:
        frame = 0
        while not done.wait(0.1):
            sys.stderr.write(f"\r{_FRAMES[frame % 4]} {current[0]}...\033[K")
            sys.stderr.flush()
            frame += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()

    def update(text: str) -> None:
        current[0] = text

    try:
        yield update
    finally:
        done.set()
        thread.join()
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
