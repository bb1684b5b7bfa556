"""The JSON API of `arbe serve`, against a live server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from arbe_entry.app import Arbe
from tests.fakes.daytona import FakeDaytona
from tests.serve.conftest import LiveServer


class TestSecrets:
    def test_put_creates_then_rotates(self, api: httpx.Client) -> None:
        created = api.put("/api/secrets/GITHUB_TOKEN", json={"value": "sk-test-123"})
        rotated = api.put(
            "/api/secrets/GITHUB_TOKEN", json={"value": "sk-test-456", "shared": True}
        )

        assert created.status_code == 201
        assert created.json()["version"] == 1
        assert rotated.status_code == 200
        assert rotated.json()["version"] == 2
        assert rotated.json()["shared"] is True

    def test_value_never_returned(self, api: httpx.Client) -> None:
        api.put("/api/secrets/GITHUB_TOKEN", json={"value": "sk-test-123"})

        listed = api.get("/api/secrets")
        viewed = api.get("/api/secrets/GITHUB_TOKEN")

        assert "sk-test-123" not in listed.text
        assert "sk-test-123" not in viewed.text
        assert [s["name"] for s in listed.json()] == ["GITHUB_TOKEN"]
        assert "value" not in viewed.json()

    def test_value_readable_by_house(self, api: httpx.Client, house: Arbe) -> None:
        """A value written through the API is the one the services resolve."""
        api.put("/api/secrets/GITHUB_TOKEN", json={"value": "line one\nline two"})

        found = house.secrets.resolve("GITHUB_TOKEN")

        assert found is not None
        assert found[0] == "line one\nline two"

    def test_json_shape_matches_cli(self, api: httpx.Client, house: Arbe) -> None:
        from arbe_entry.cli.secret import _secret_dict

        api.put("/api/secrets/NPM_TOKEN", json={"value": "sk-test-123"})

        assert api.get("/api/secrets/NPM_TOKEN").json() == _secret_dict(
            house.secrets.view("NPM_TOKEN")
        )

    def test_invalid_name_rejected(self, api: httpx.Client) -> None:
        response = api.put("/api/secrets/lower_case", json={"value": "sk-test-123"})

        assert response.status_code == 422
        assert response.json()["error"] == "invalid_input"
        assert "[A-Z_][A-Z0-9_]*" in response.json()["message"]

    def test_missing_secret_not_found(self, api: httpx.Client) -> None:
        response = api.get("/api/secrets/NOPE")

        assert response.status_code == 404
        assert response.json()["type"] == "SecretNotFound"

    def test_delete_secret(self, api: httpx.Client) -> None:
        api.put("/api/secrets/GITHUB_TOKEN", json={"value": "sk-test-123"})

        deleted = api.delete("/api/secrets/GITHUB_TOKEN")

        assert deleted.status_code == 200
        assert deleted.json()["deleted"] is True
        assert api.get("/api/secrets/GITHUB_TOKEN").status_code == 404

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({}, "Missing field 'value'"),
            ({"value": 5}, "expected a string"),
            ({"value": "x", "shared": "yes"}, "expected true or false"),
            ({"value": "x", "audience": "sandbox"}, "Invalid audience"),
            ({"value": "x", "colour": "red"}, "Unknown field 'colour'"),
            ({"value": ""}, "is empty"),
        ],
    )
    def test_bad_body_rejected(
        self, api: httpx.Client, body: dict[str, object], message: str
    ) -> None:
        response = api.put("/api/secrets/GITHUB_TOKEN", json=body)

        assert response.status_code == 422
        assert message in response.json()["message"]

    def test_non_json_rejected(self, api: httpx.Client) -> None:
        as_form = api.put("/api/secrets/GITHUB_TOKEN", data={"value": "sk-test-123"})
        broken = api.put(
            "/api/secrets/GITHUB_TOKEN",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )

        assert as_form.status_code == 415
        assert broken.status_code == 400
        assert broken.json()["error"] == "bad_request"


class TestEnvironments:
    def test_create_local_env(self, api: httpx.Client, local_repo: Path) -> None:
        response = api.post(
            "/api/environments",
            json={
                "name": "dev",
                "runtime": "local",
                "repos": [str(local_repo)],
                "secrets": ["GITHUB_TOKEN"],
            },
        )

        body = response.json()
        assert response.status_code == 201
        assert body["name"] == "dev"
        assert body["runtime"] == "local"
        assert body["sandbox_id"].startswith("lsb_")
        assert body["bindings"] == [{"name": "GITHUB_TOKEN", "required": True}]
        assert "GITHUB_TOKEN is not set yet" in body["warnings"][0]

    def test_env_json_matches_cli(
        self, api: httpx.Client, house: Arbe, local_repo: Path
    ) -> None:
        from arbe_entry.cli.env import env_dict

        api.post("/api/environments", json={"name": "dev", "runtime": "local"})

        service = house.environments
        expected = env_dict(service.get("dev"), service.active())
        assert api.get("/api/environments/dev").json() == expected
        assert api.get("/api/environments").json() == [expected]

    def test_daytona_without_key_rejected(
        self, api: httpx.Client, fake_daytona: FakeDaytona
    ) -> None:
        """Without DAYTONA_API_KEY the response is 409 and nothing is provisioned."""
        response = api.post("/api/environments", json={"name": "dev"})

        assert response.status_code == 409
        assert response.json()["error"] == "credential_missing"
        assert "DAYTONA_API_KEY" in response.json()["message"]
        assert fake_daytona.requests == []
        assert api.get("/api/environments").json() == []

    def test_daytona_env_provisioned(
        self,
        live_app: Callable[..., LiveServer],
        fake_daytona: FakeDaytona,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("DAYTONA_API_URL", fake_daytona.api_url)
        fake_daytona.create_polls = 1
        server = live_app()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.put(
                "/api/secrets/DAYTONA_API_KEY",
                json={"value": fake_daytona.api_key, "audience": "capability"},
            )
            created = client.post("/api/environments", json={"name": "dev"})
            sandboxes = client.get("/api/runtimes/daytona/sandboxes")

        assert created.status_code == 201
        sandbox_id = created.json()["sandbox_id"]
        assert fake_daytona.find(sandbox_id) is not None
        assert [s["id"] for s in sandboxes.json()] == [sandbox_id]
        assert sandboxes.json()[0]["labels"]["arbe.env"] == "dev"

    def test_unknown_runtime_invalid(self, api: httpx.Client) -> None:
        response = api.post(
            "/api/environments", json={"name": "dev", "runtime": "nowhere"}
        )

        assert response.status_code == 422
        assert "Runtime 'nowhere' not found" in response.json()["message"]

    def test_duplicate_env_conflict(self, api: httpx.Client) -> None:
        api.post("/api/environments", json={"name": "dev", "runtime": "local"})

        again = api.post("/api/environments", json={"name": "dev", "runtime": "local"})

        assert again.status_code == 409
        assert again.json()["error"] == "conflict"

    def test_diagnose_reports_checks(self, api: httpx.Client) -> None:
        api.post(
            "/api/environments",
            json={"name": "dev", "runtime": "local", "secrets": ["MISSING_TOKEN"]},
        )

        response = api.get("/api/environments/dev/diagnose")

        body = response.json()
        checks = {c["name"]: c for c in body["checks"]}
        assert response.status_code == 200
        assert body["ok"] is False
        assert checks["secret MISSING_TOKEN"]["ok"] is False
        assert checks["sandbox"]["ok"] is True

    def test_delete_env_destroys_sandbox(self, api: httpx.Client) -> None:
        created = api.post(
            "/api/environments", json={"name": "dev", "runtime": "local"}
        ).json()

        deleted = api.delete("/api/environments/dev?destroy_sandbox=true")

        assert deleted.status_code == 200
        assert deleted.json()["sandbox_destroyed"] is True
        assert api.get("/api/environments/dev").status_code == 404
        ids = [s["id"] for s in api.get("/api/runtimes/local/sandboxes").json()]
        assert created["sandbox_id"] not in ids

    def test_runtimes_listed(self, api: httpx.Client) -> None:
        runtimes = {r["name"]: r for r in api.get("/api/runtimes").json()}

        assert runtimes["local"]["credential_set"] is True
        assert runtimes["daytona"]["credential"] == "DAYTONA_API_KEY"
        assert runtimes["daytona"]["credential_set"] is False

    def test_sandboxes_need_credential(self, api: httpx.Client) -> None:
        response = api.get("/api/runtimes/daytona/sandboxes")

        assert response.status_code == 409
        assert response.json()["error"] == "credential_missing"


class TestThreads:
    def test_create_post_and_read(self, api: httpx.Client) -> None:
        api.post("/api/environments", json={"name": "dev", "runtime": "local"})

        thread = api.post(
            "/api/threads", json={"env": "dev", "model": "builtin/shell"}
        ).json()
        posted = api.post(
            f"/api/threads/{thread['id']}/entries",
            json={"text": "echo hi", "start_worker": False},
        )
        entries = api.get(f"/api/threads/{thread['id']}/entries")
        viewed = api.get(f"/api/threads/{thread['id']}")

        assert posted.status_code == 201
        assert posted.json()["seq"] == 1
        assert posted.json()["dispatch"]["state"] == "queued"
        assert posted.json()["worker_started"] is False
        assert [e["body"] for e in entries.json()] == ["echo hi"]
        assert viewed.json()["dispatch"]["state"] == "queued"
        assert [t["id"] for t in api.get("/api/threads").json()] == [thread["id"]]

    def test_thread_json_matches_cli(self, api: httpx.Client, house: Arbe) -> None:
        from arbe_entry.cli.thread import thread_dict

        thread = api.post("/api/threads", json={"model": "builtin/shell"}).json()

        found = house.threads.get(thread["id"])
        assert thread == thread_dict(found)

    def test_unknown_env_not_found(self, api: httpx.Client) -> None:
        response = api.post("/api/threads", json={"env": "nope"})

        assert response.status_code == 404
        assert response.json()["type"] == "EnvironmentNotFound"

    def test_unknown_thread_not_found(self, api: httpx.Client) -> None:
        assert api.get("/api/threads/thr_nope").status_code == 404
        assert api.get("/api/threads/thr_nope/entries").status_code == 404
        assert api.get("/api/threads/thr_nope/events").status_code == 404

    def test_bad_limit_rejected(self, api: httpx.Client) -> None:
        response = api.get("/api/threads?limit=zero")

        assert response.status_code == 422
        assert "limit" in response.json()["message"]

    def test_unknown_route_json(self, api: httpx.Client) -> None:
        missing = api.get("/api/nothing")
        wrong_method = api.patch("/api/secrets/X", json={})

        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error"] == "method_not_allowed"


def _events(response: httpx.Response) -> list[tuple[str, dict[str, object] | None]]:
    """Read a whole event stream into (event, data) pairs."""
    events: list[tuple[str, dict[str, object] | None]] = []
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = "message"
    return events


class TestEvents:
    def test_stream_follows_worker(
        self, live_app: Callable[..., LiveServer], local_repo: Path
    ) -> None:
        """Entries arrive in order and the stream ends with the dispatch."""
        from arbe_entry.spawn import ensure_worker

        server = live_app(start_worker=ensure_worker)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.post(
                "/api/environments",
                json={"name": "dev", "runtime": "local", "repos": [str(local_repo)]},
            )
            thread = client.post(
                "/api/threads", json={"env": "dev", "model": "builtin/shell"}
            ).json()
            client.post(
                f"/api/threads/{thread['id']}/entries",
                json={"text": "cat README.md"},
            )
            with client.stream("GET", f"/api/threads/{thread['id']}/events") as stream:
                content_type = stream.headers["content-type"]
                events = _events(stream)

        names = [name for name, _ in events]
        entries = [data for name, data in events if name == "entry" and data]
        assert content_type.startswith("text/event-stream")
        assert names[-1] == "end"
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert any("readme-of-the-test-repo" in str(e["body"]) for e in entries)
        assert events[-1][1] is not None
        assert events[-1][1]["state"] == "completed"

    def test_stream_resumes_after_seq(self, api: httpx.Client, house: Arbe) -> None:
        thread_id = api.post("/api/threads", json={"model": "builtin/shell"}).json()[
            "id"
        ]
        for text in ("one", "two", "three"):
            api.post(
                f"/api/threads/{thread_id}/entries",
                json={"text": text, "start_worker": False},
            )
        # Cancelling ends the dispatch, so the stream ends after the backlog.
        house.threads.cancel(thread_id)

        with api.stream(
            "GET", f"/api/threads/{thread_id}/events", headers={"Last-Event-ID": "2"}
        ) as stream:
            events = _events(stream)

        bodies = [d["body"] for n, d in events if n == "entry" and d]
        assert bodies[0] == "three"
        assert events[-1][0] == "end"
        assert events[-1][1] is not None
        assert events[-1][1]["state"] == "cancelled"
