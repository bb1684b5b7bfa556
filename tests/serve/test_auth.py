"""Tokens, login sessions, CSRF, host and origin checks, and the `serve` command."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from arbe_entry.cli.house import API_TOKEN_SETTING, hash_api_token
from tests.helpers import arbe_env, run_arbe
from tests.serve.conftest import LiveServer, ServeProcess


def _create_token() -> str:
    result = run_arbe("house", "token", "create", "--json")
    assert result.returncode == 0, result.stderr
    token = str(httpx.Response(200, content=result.stdout).json()["token"])
    return token


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "the page has no CSRF field"
    return found.group(1)


class TestTokenCommand:
    def test_stores_only_hash(self, serve_home: Path) -> None:
        from arbe_entry.app import Arbe
        from arbe_entry.config import Settings

        result = run_arbe("house", "token", "create")

        token = result.stdout.strip()
        opened = Arbe(Settings.from_env())
        with opened.deps.storage.unit_of_work(write=False) as uow:
            stored = uow.houses.get_setting(API_TOKEN_SETTING)
        assert result.returncode == 0
        assert token.startswith("arbe_")
        assert stored == hash_api_token(token)
        assert token not in (serve_home / "arbe.db").read_bytes().decode("latin-1")
        assert "only time the token is shown" in result.stderr

    def test_new_token_replaces_old(self, serve_home: Path) -> None:
        first = _create_token()
        second = _create_token()

        assert first != second


class TestTokenRequired:
    def test_api_without_token_unauthorized(
        self, live_app: Callable[..., LiveServer]
    ) -> None:
        token = _create_token()
        server = live_app(require_token=True)

        missing = httpx.get(server.url + "/api/house")
        wrong = httpx.get(
            server.url + "/api/house", headers={"Authorization": "Bearer arbe_wrong"}
        )
        right = httpx.get(
            server.url + "/api/house", headers={"Authorization": f"Bearer {token}"}
        )

        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "arbe house token create" in missing.json()["message"]
        assert wrong.status_code == 401
        assert right.status_code == 200

    def test_schema_public(self, live_app: Callable[..., LiveServer]) -> None:
        _create_token()
        server = live_app(require_token=True)

        assert httpx.get(server.url + "/openapi.json").status_code == 200

    def test_page_redirects_to_login(self, live_app: Callable[..., LiveServer]) -> None:
        _create_token()
        server = live_app(require_token=True)

        response = httpx.get(server.url + "/threads/new?env=dev")

        assert response.status_code == 303
        assert (
            response.headers["location"] == "/login?next=%2Fthreads%2Fnew%3Fenv%3Ddev"
        )

    def test_login_sets_session(self, live_app: Callable[..., LiveServer]) -> None:
        token = _create_token()
        server = live_app(require_token=True)
        with httpx.Client(base_url=server.url) as client:
            csrf = _csrf(client.get("/login"))

            rejected = client.post(
                "/login", data={"csrf_token": csrf, "token": "arbe_wrong"}
            )
            accepted = client.post(
                "/login",
                data={"csrf_token": csrf, "token": token, "next": "/environments"},
            )
            page = client.get("/environments")
            api = client.get("/api/house")

        assert rejected.status_code == 401
        assert "not valid" in rejected.text
        assert accepted.status_code == 303
        assert accepted.headers["location"] == "/environments"
        assert "httponly" in accepted.headers["set-cookie"].lower()
        assert "samesite=strict" in accepted.headers["set-cookie"].lower()
        assert page.status_code == 200
        assert api.status_code == 200

    def test_new_token_ends_sessions(self, live_app: Callable[..., LiveServer]) -> None:
        token = _create_token()
        server = live_app(require_token=True)
        with httpx.Client(base_url=server.url) as client:
            csrf = _csrf(client.get("/login"))
            client.post("/login", data={"csrf_token": csrf, "token": token})
            before = client.get("/api/house")
            _create_token()
            after = client.get("/api/house")

        assert before.status_code == 200
        assert after.status_code == 401

    def test_login_next_stays_local(self, live_app: Callable[..., LiveServer]) -> None:
        token = _create_token()
        server = live_app(require_token=True)
        with httpx.Client(base_url=server.url) as client:
            csrf = _csrf(client.get("/login"))
            response = client.post(
                "/login",
                data={"csrf_token": csrf, "token": token, "next": "//evil.example/x"},
            )

        assert response.headers["location"] == "/threads"


class TestForms:
    def test_form_without_csrf_forbidden(self, api: httpx.Client) -> None:
        response = api.post("/environments", data={"name": "dev", "runtime": "local"})

        assert response.status_code == 403
        assert "CSRF" in response.text
        assert api.get("/api/environments").json() == []

    def test_form_with_wrong_csrf_forbidden(self, api: httpx.Client) -> None:
        api.get("/threads/new")

        response = api.post(
            "/environments",
            data={"csrf_token": "x" * 43, "name": "dev", "runtime": "local"},
        )

        assert response.status_code == 403

    def test_form_with_csrf_creates_env(self, api: httpx.Client) -> None:
        csrf = _csrf(api.get("/threads/new"))

        response = api.post(
            "/environments",
            data={"csrf_token": csrf, "name": "dev", "runtime": "local"},
        )

        assert response.status_code == 303
        assert response.headers["location"] == "/threads/new?env=dev&created=dev"
        assert [e["name"] for e in api.get("/api/environments").json()] == ["dev"]

    def test_cross_site_origin_forbidden(self, api: httpx.Client) -> None:
        csrf = _csrf(api.get("/threads/new"))

        form = api.post(
            "/environments",
            data={"csrf_token": csrf, "name": "dev", "runtime": "local"},
            headers={"Origin": "http://evil.example"},
        )
        json_call = api.put(
            "/api/secrets/GITHUB_TOKEN",
            json={"value": "sk-test-123"},
            headers={"Origin": "http://evil.example"},
        )

        assert form.status_code == 403
        assert json_call.status_code == 403
        assert api.get("/api/secrets").json() == []

    def test_rebound_host_rejected(self, api: httpx.Client) -> None:
        """A page on another domain pointed at 127.0.0.1 cannot read the API."""
        response = api.get("/api/house", headers={"Host": "evil.example"})

        assert response.status_code == 400
        assert "Invalid Host header" in response.json()["message"]

    def test_security_headers_sent(self, api: httpx.Client) -> None:
        response = api.get("/threads")

        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"


class TestServeCommand:
    def test_other_host_needs_token(self, serve_home: Path) -> None:
        """The check runs before anything is bound, so nothing listens."""
        result = run_arbe("serve", "--host", "0.0.0.0", "--port", "0")

        assert result.returncode == 1
        assert "requires an API token" in result.stderr
        assert "arbe house token create" in result.stderr

    def test_busy_port_reported(
        self, serve_process: Callable[..., ServeProcess]
    ) -> None:
        first = serve_process()
        port = first.url.rsplit(":", 1)[1]

        result = run_arbe("serve", "--port", port)

        assert result.returncode == 1
        assert f"Cannot listen on 127.0.0.1 port {port}" in result.stderr

    def test_serves_house(self, serve_process: Callable[..., ServeProcess]) -> None:
        server = serve_process()

        house = httpx.get(server.url + "/api/house")
        page = httpx.get(server.url + "/threads/new")

        assert house.json()["name"] == "default"
        assert page.status_code == 200
        assert "+ Create env" in page.text

    def test_require_token_on_loopback(
        self, serve_process: Callable[..., ServeProcess]
    ) -> None:
        token = _create_token()
        server = serve_process("--require-token")

        without = httpx.get(server.url + "/api/house")
        with_token = httpx.get(
            server.url + "/api/house", headers={"Authorization": f"Bearer {token}"}
        )

        assert without.status_code == 401
        assert with_token.status_code == 200

    def test_cli_loads_no_web_stack(self, serve_home: Path) -> None:
        code = (
            "import sys; from arbe_entry.cli import app; "
            "bad = [m for m in ('starlette', 'uvicorn', 'jinja2', 'arbe_entry.serve') "
            "if m in sys.modules]; print(bad)"
        )

        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=arbe_env(),
            check=True,
        )

        assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
        ("example.invalid", False),
    ],
)
def test_is_loopback_cases(host: str, loopback: bool) -> None:
    from arbe_entry.serve._auth import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:8717", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8717", "::1"),
        ("evil.example:80", "evil.example"),
    ],
)
def test_host_of_header(header: str, host: str) -> None:
    from arbe_entry.serve._auth import host_of

    assert host_of(header) == host
