"""The OpenAPI document of `arbe serve`, and schemathesis against a live server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import positive_data_acceptance

from arbe_entry.serve._openapi import document
from tests.serve.conftest import LiveServer

#: Generated requests per operation and generation mode (valid and invalid
#: data). The whole file took 30 to 45 s on a two-core machine.
EXAMPLES_PER_OPERATION = 25


#: The event stream of a thread with a live dispatch stays open until the
#: dispatch ends, which never happens without a worker. test_api.py covers it.
EVENTS = "/api/threads/{thread_id}/events"
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in document()["paths"].items()
    for method in item
    if method != "parameters" and path != EVENTS
)


@pytest.fixture
def api_schema(live_app: Callable[..., LiveServer]) -> schemathesis.BaseSchema:
    """Serve a house that has an environment and a secret, and load its schema.

    Listings then return items whose shape the checks compare with the
    document. The server starts no workers, so no generated entry
    dispatches anything.
    """
    server = live_app()
    with httpx.Client(base_url=server.url) as client:
        client.post(
            "/api/environments", json={"name": "dev", "runtime": "local"}
        ).raise_for_status()
        client.put(
            "/api/secrets/GITHUB_TOKEN", json={"value": "sk-test-123"}
        ).raise_for_status()
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


# NOTE: schemathesis's own pytest integration (`schemathesis.pytest.from_fixture`)
# fails on pytest 9.2 with "'Function' object has no attribute '_nodeid'", so
# each operation runs its cases through the operation's Hypothesis strategy.
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
@pytest.mark.parametrize("label", OPERATIONS)
def test_api_conforms(
    api_schema: schemathesis.BaseSchema, label: str, mode: schemathesis.GenerationMode
) -> None:
    """No generated request gets a 5xx, and every response matches the document."""
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case[Any]) -> None:
        # Schema-valid data may still break a rule no schema can state (a repo
        # git cannot clone, a runtime no plugin registers), and then 422 is right.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    try:
        check()
    except Unsatisfiable:
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise
        pytest.skip(f"{label} has no parameter or body that can be made invalid")


def test_document_covers_routes(serve_home: Path) -> None:
    """Every /api route has an operation in the document, and no more."""
    from starlette.routing import Route

    from arbe_entry.serve._api import routes

    served = {
        (route.path, method.lower())
        for route in routes()
        if isinstance(route, Route) and route.path.startswith("/api/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }

    assert served == described


def test_document_valid_openapi() -> None:
    """The document passes schemathesis's OpenAPI 3.0 validation."""
    schemathesis.openapi.from_dict(document()).validate()
