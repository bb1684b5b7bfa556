"""The suite-wide guard: no test connects beyond the loopback interface."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import BLOCKED, CONNECTED


def test_guard_blocks_public_address() -> None:
    """A connection to a public address fails before any packet is sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    with pytest.raises(ConnectionRefusedError, match=r"tests stay on 127\.0\.0\.1"):
        sock.connect(("192.0.2.1", 443))
    sock.close()
    BLOCKED.remove("192.0.2.1")  # this attempt was on purpose


def test_guard_allows_loopback() -> None:
    """Loopback connections go through, and are recorded."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    client = socket.create_connection(("127.0.0.1", port))

    assert "127.0.0.1" in CONNECTED
    client.close()
    server.close()


def test_guard_blocked_nothing_so_far() -> None:
    """No test that ran before this one tried to leave 127.0.0.1."""
    assert BLOCKED == []
