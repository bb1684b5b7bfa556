"""PostgreSQL fixtures: a fresh schema per test on the server of the test run.

The server comes from `ARBE_TEST_POSTGRES_URL`, for example
`postgresql://postgres@127.0.0.1:5432/test`. Without it the PostgreSQL tests
skip, unless `ARBE_REQUIRE_POSTGRES=1` (set by CI), which turns every skip of
a test marked `postgres` into a failure, so CI cannot pass without running
them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    from arbe_adapters.storage.postgres import PostgresStorage

#: The variable naming the PostgreSQL server the tests may use.
URL_VARIABLE = "ARBE_TEST_POSTGRES_URL"
#: Set to 1 to fail, not skip, PostgreSQL tests that cannot run.
REQUIRE_VARIABLE = "ARBE_REQUIRE_POSTGRES"


def postgres_required() -> bool:
    """Tell whether this run must fail rather than skip PostgreSQL tests."""
    return os.environ.get(REQUIRE_VARIABLE) == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it when PostgreSQL tests are required."""
    if postgres_required():
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1 requires PostgreSQL tests).")
    pytest.skip(reason)


def with_search_path(url: str, schema: str) -> str:
    """Return `url` with `options=-csearch_path=SCHEMA` added to its query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    options = " ".join(v for k, v in query if k == "options")
    options = f"{options} -csearch_path={schema}".strip()
    query = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the `postgres_url` fixture `postgres`."""
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Turn a skipped `postgres` test into a failure when PostgreSQL is required."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("postgres") is not None
        and postgres_required()
    ):
        # A skip's longrepr is (path, line, "Skipped: reason").
        skipped = report.longrepr
        reason = skipped[2] if isinstance(skipped, tuple) else skipped
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} was skipped, but {REQUIRE_VARIABLE}=1 requires "
            f"PostgreSQL tests to run. {reason}"
        )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Create an empty schema and yield a URL whose search_path is that schema.

    The schema and everything in it is dropped after the test.
    """
    base = os.environ.get(URL_VARIABLE)
    if not base:
        skip_or_fail(f"{URL_VARIABLE} is not set, so no PostgreSQL server to use")
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        skip_or_fail("psycopg is not installed; pip install -e '.[postgres]'")

    schema = f"arbe_test_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema))
    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
    with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
        conn.execute(create)
    try:
        yield with_search_path(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(drop)


@pytest.fixture
def postgres_storage(
    postgres_url: str,
) -> Iterator[Callable[..., PostgresStorage]]:
    """Yield a factory that opens `PostgresStorage` on the test's schema.

    Every call opens a new storage with its own pool, as another process
    would, and passes its keyword arguments on (`poll_interval_s=...`). All
    of them are closed after the test, before the schema is dropped.
    """
    from arbe_adapters.storage.postgres import PostgresStorage

    opened: list[PostgresStorage] = []

    def open_storage(**kwargs: Any) -> PostgresStorage:
        storage = PostgresStorage(postgres_url, **kwargs)
        opened.append(storage)
        return storage

    yield open_storage
    for storage in opened:
        storage.close()
