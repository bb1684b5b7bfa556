"""Fixtures shared by every test tier, and the guard that keeps tests offline."""

from __future__ import annotations

import ipaddress
import sys

import pytest

pytest_plugins = [
    "arbe_adapters.testing.runtime_contract",
    "tests.fakes.daytona",
    "tests.fakes.sprites",
    "tests.fakes.openrouter",
    "tests.contract.postgres_fixtures",
]

#: Addresses the test process connected to, and those the guard blocked.
CONNECTED: list[str] = []
BLOCKED: list[str] = []


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback or (
            ipaddress.ip_address(host).version == 6
            and (mapped := ipaddress.IPv6Address(host).ipv4_mapped) is not None
            and mapped.is_loopback
        )
    except ValueError:
        return False


def _offline_guard(event: str, args: tuple[object, ...]) -> None:
    """Block any connection from the test process to a non-loopback address."""
    if event != "socket.connect":
        return
    address = args[1]
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        if _is_loopback(address[0]):
            CONNECTED.append(address[0])
            return
        BLOCKED.append(address[0])
        msg = f"a test tried to connect to {address[0]!r}; tests stay on 127.0.0.1"
        raise ConnectionRefusedError(msg)


sys.addaudithook(_offline_guard)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any code tried to leave 127.0.0.1, even if it caught the error."""
    if BLOCKED:
        sys.stderr.write(
            f"\nConnections beyond 127.0.0.1 were attempted and blocked: {BLOCKED}\n"
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
