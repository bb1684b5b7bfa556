"""The environment service on in-memory storage with the local runtime."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import pytest

from arbe_adapters.crypto import AesGcmSealer
from arbe_adapters.plugins import load_plugins
from arbe_adapters.plugins.hookspecs import Register, hookimpl
from arbe_adapters.storage import InMemoryStorage
from arbe_core.errors import (
    Conflict,
    EnvironmentNotFound,
    InvalidInput,
    InvalidName,
    RuntimeNotFound,
    SandboxNotFound,
    Unavailable,
)
from arbe_core.models import SecretAudience
from arbe_core.runtime import (
    ENV_LABEL,
    HOUSE_LABEL,
    Capabilities,
    Check,
    ExecResult,
    Health,
    RuntimeContext,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
)
from arbe_core.services.environments import check_repo_url
from arbe_entry.app import Arbe
from arbe_entry.config import Settings
from tests.helpers import FakeClock, SequentialIds

MASTER_KEY = bytes(range(32))
CAPABILITY_MESSAGE = "capability secrets are for arbe itself and never enter a sandbox"


class FakeBrokenRuntime:
    """A runtime whose `provision` creates a sandbox, then fails and leaves it.

    Real runtimes clean up after a failed provision; this one breaks that
    contract on purpose, so the service's own clean-up can be seen.
    """

    name = "broken"
    credential: str | None = None
    capabilities = Capabilities()

    def __init__(self, context: RuntimeContext) -> None:
        self.house_id = context.house_id
        self.sandboxes: dict[str, SandboxInfo] = {}
        self.destroyed: list[str] = []

    def provision(self, spec: SandboxSpec) -> SandboxInfo:
        sandbox_id = f"brk_{len(self.sandboxes) + 1}"
        self.sandboxes[sandbox_id] = SandboxInfo(
            id=sandbox_id,
            name=spec.name or sandbox_id,
            runtime=self.name,
            state=SandboxState.CREATING,
            labels={**spec.labels, HOUSE_LABEL: self.house_id},
        )
        raise Unavailable(f"Cloning into sandbox {sandbox_id!r} failed.")

    def get(self, sandbox_id: str) -> SandboxInfo:
        for info in self.sandboxes.values():
            if sandbox_id in (info.id, info.name):
                return info
        raise SandboxNotFound(sandbox_id, self.name)

    def list(self) -> builtins.list[SandboxInfo]:
        return builtins.list(self.sandboxes.values())

    def destroy(self, sandbox_id: str) -> bool:
        self.destroyed.append(sandbox_id)
        return self.sandboxes.pop(sandbox_id, None) is not None

    def start(self, sandbox_id: str) -> SandboxInfo:
        return self.get(sandbox_id)

    def stop(self, sandbox_id: str) -> SandboxInfo:
        return self.get(sandbox_id)

    def ping(self, sandbox_id: str) -> Health:
        return Health(self.get(sandbox_id).state, 0.0)

    def exec(
        self,
        sandbox_id: str,
        command: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> ExecResult:
        raise Unavailable("FakeBrokenRuntime runs no commands.")

    def diagnose(self) -> builtins.list[Check]:
        return []


class FakeBrokenPlugin:
    """Registers the `broken` runtime and keeps the instance it built."""

    def __init__(self) -> None:
        self.runtime: FakeBrokenRuntime | None = None

    def build(self, context: RuntimeContext) -> FakeBrokenRuntime:
        self.runtime = FakeBrokenRuntime(context)
        return self.runtime

    @hookimpl
    def register_runtimes(self, register: Register) -> None:
        register("broken", self.build, description="fails after creating")


@pytest.fixture(autouse=True)
def no_process_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep keys of the developer's shell out of the model key checks."""
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_BASE_URL", raising=False)


@pytest.fixture
def broken_plugin() -> FakeBrokenPlugin:
    return FakeBrokenPlugin()


@pytest.fixture
def opened(tmp_path: Path, broken_plugin: FakeBrokenPlugin) -> Arbe:
    return Arbe(
        Settings(home=tmp_path / "home", plugins=""),
        storage=InMemoryStorage(),
        sealer=AesGcmSealer(MASTER_KEY),
        clock=FakeClock(),
        ids=SequentialIds(),
        plugins=load_plugins("", extra=[broken_plugin]),
    )


@pytest.fixture
def repo(contract_repo: str) -> Path:
    """A local git repository whose one commit adds README.md."""
    return Path(urlparse(contract_repo).path)


def set_secret(
    opened: Arbe,
    name: str,
    value: str = "sk-test-123",
    audience: SecretAudience = SecretAudience.ENVIRONMENT,
    shared: bool = True,
) -> None:
    opened.secrets.set(name, value, audience=audience, shared=shared)


def env_actions(opened: Arbe) -> list[str]:
    """Return the audited actions on environments and sandboxes, oldest first."""
    with opened.deps.storage.unit_of_work(write=False) as uow:
        events = uow.audit.list(opened.house.id)
    return [e.action for e in events if e.action.startswith(("env.", "sandbox."))]


def check_named(checks: list[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


class TestEnvironmentCreate:
    def test_create_provisions_labelled_sandbox(self, opened: Arbe, repo: Path) -> None:
        env, _ = opened.environments.create("web", runtime="local", repos=[str(repo)])

        sandbox = opened.runtimes.get("local").get(env.sandbox_id or "")
        assert sandbox.labels[HOUSE_LABEL] == opened.house.id
        assert sandbox.labels[ENV_LABEL] == "web"
        assert Path(sandbox.workdir or "", "README.md").is_file()
        assert opened.environments.get("web").sandbox_id == sandbox.id

    def test_create_records_repos_and_bindings(self, opened: Arbe, repo: Path) -> None:
        set_secret(opened, "GITHUB_TOKEN")

        env, warnings = opened.environments.create(
            "web",
            runtime="local",
            repos=[str(repo), str(repo)],
            secrets=["GITHUB_TOKEN"],
            optional_secrets=["SENTRY_DSN"],
        )

        assert env.allowed_repos == (str(repo),)
        assert env.binding("GITHUB_TOKEN") is not None
        assert env.binding("GITHUB_TOKEN").required is True  # type: ignore[union-attr]
        assert env.binding("SENTRY_DSN").required is False  # type: ignore[union-attr]
        assert len(warnings) == 1
        assert "SENTRY_DSN" in warnings[0]

    def test_create_existing_sandbox_bound(self, opened: Arbe) -> None:
        runtime = opened.runtimes.get("local")
        existing = runtime.provision(SandboxSpec(labels={}, name="shared-box"))

        env, _ = opened.environments.create(
            "web", runtime="local", sandbox="shared-box"
        )

        assert env.sandbox_id == existing.id
        assert [s.id for s in runtime.list()] == [existing.id]

    def test_create_unknown_sandbox_name_provisions(self, opened: Arbe) -> None:
        env, _ = opened.environments.create("web", runtime="local", sandbox="new-box")

        sandbox = opened.runtimes.get("local").get(env.sandbox_id or "")
        assert sandbox.name == "new-box"
        assert sandbox.labels[ENV_LABEL] == "web"

    def test_create_existing_name_rejected(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")

        with pytest.raises(Conflict, match="already exists"):
            opened.environments.create("web", runtime="local")

        assert len(opened.runtimes.get("local").list()) == 1

    @pytest.mark.parametrize(
        ("name", "runtime", "error"),
        [
            ("Web", "local", InvalidName),
            ("web", "nowhere", RuntimeNotFound),
        ],
    )
    def test_create_invalid_input_records_nothing(
        self, opened: Arbe, name: str, runtime: str, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            opened.environments.create(name, runtime=runtime)

        assert opened.environments.list() == []
        assert env_actions(opened) == []

    def test_first_environment_becomes_active(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")
        opened.environments.create("api", runtime="local")

        assert opened.environments.active() == "web"

    def test_failed_provision_records_nothing(
        self, opened: Arbe, broken_plugin: FakeBrokenPlugin
    ) -> None:
        with pytest.raises(Unavailable, match="Cloning"):
            opened.environments.create("web", runtime="broken")

        assert opened.environments.list() == []
        assert env_actions(opened) == []
        assert opened.environments.active() is None

    def test_failed_provision_destroys_half_made_sandbox(
        self, opened: Arbe, broken_plugin: FakeBrokenPlugin
    ) -> None:
        with pytest.raises(Unavailable):
            opened.environments.create("web", runtime="broken")

        assert broken_plugin.runtime is not None
        assert broken_plugin.runtime.destroyed == ["brk_1"]
        assert broken_plugin.runtime.sandboxes == {}

    def test_failed_provision_keeps_older_labelled_sandbox(
        self, opened: Arbe, broken_plugin: FakeBrokenPlugin
    ) -> None:
        """A sandbox kept from an earlier environment of the same name survives."""
        runtime = opened.runtimes.get("broken")
        assert isinstance(runtime, FakeBrokenRuntime)
        kept = SandboxInfo(
            id="kept_1",
            name="kept_1",
            runtime="broken",
            state=SandboxState.STARTED,
            labels={HOUSE_LABEL: opened.house.id, ENV_LABEL: "web"},
        )
        runtime.sandboxes["kept_1"] = kept

        with pytest.raises(Unavailable):
            opened.environments.create("web", runtime="broken")

        assert list(runtime.sandboxes) == ["kept_1"]


class TestRepoUrls:
    @pytest.mark.parametrize(
        "url",
        [
            "https://github.com/acme/web.git",
            "ssh://git@github.com/acme/web.git",
            "git@github.com:acme/web.git",
            "file:///srv/git/web.git",
        ],
    )
    def test_check_repo_url_accepts_git_urls(self, url: str) -> None:
        assert check_repo_url(url, lambda _: False) == url

    def test_check_repo_url_accepts_existing_path(self, repo: Path) -> None:
        assert check_repo_url(str(repo), lambda p: Path(p).exists()) == str(repo)

    @pytest.mark.parametrize("url", ["ftp://x", "not a url", "/no/such/repo", ""])
    def test_check_repo_url_rejects(self, url: str) -> None:
        with pytest.raises(InvalidInput, match="Invalid repo"):
            check_repo_url(url, lambda p: Path(p).exists())

    def test_create_records_accepted_urls(self, opened: Arbe) -> None:
        """With a bound sandbox nothing is cloned, so remote URLs are only checked."""
        opened.runtimes.get("local").provision(SandboxSpec(labels={}, name="box"))
        urls = [
            "https://github.com/acme/web.git",
            "ssh://git@github.com/acme/web.git",
            "git@github.com:acme/api.git",
            "file:///srv/git/web.git",
        ]

        env, _ = opened.environments.create(
            "web", runtime="local", sandbox="box", repos=urls
        )

        assert env.allowed_repos == tuple(urls)

    @pytest.mark.parametrize("url", ["ftp://x", "not a url", "/no/such/repo"])
    def test_create_rejected_url_records_nothing(self, opened: Arbe, url: str) -> None:
        with pytest.raises(InvalidInput, match="Invalid repo"):
            opened.environments.create("web", runtime="local", repos=[url])

        assert opened.environments.list() == []
        assert opened.runtimes.get("local").list() == []


class TestEnvironmentBindings:
    @pytest.fixture
    def env_name(self, opened: Arbe) -> str:
        opened.environments.create("web", runtime="local")
        return "web"

    def test_bind_missing_secret_warns(self, opened: Arbe, env_name: str) -> None:
        env, warnings = opened.environments.bind(env_name, "NPM_TOKEN")

        assert env.binding("NPM_TOKEN") is not None
        assert len(warnings) == 1
        assert "NPM_TOKEN" in warnings[0]
        assert "arbe secret set NPM_TOKEN" in warnings[0]

    def test_bind_set_secret_no_warning(self, opened: Arbe, env_name: str) -> None:
        set_secret(opened, "NPM_TOKEN")

        _, warnings = opened.environments.bind(env_name, "NPM_TOKEN")

        assert warnings == []

    def test_bind_capability_secret_rejected(self, opened: Arbe, env_name: str) -> None:
        set_secret(opened, "OPENROUTER_API_KEY", audience=SecretAudience.CAPABILITY)

        with pytest.raises(InvalidInput, match=CAPABILITY_MESSAGE):
            opened.environments.bind(env_name, "OPENROUTER_API_KEY")

        assert opened.environments.get(env_name).bindings == ()

    def test_create_with_capability_secret_rejected(self, opened: Arbe) -> None:
        set_secret(opened, "DAYTONA_API_KEY", audience=SecretAudience.CAPABILITY)

        with pytest.raises(InvalidInput, match=CAPABILITY_MESSAGE):
            opened.environments.create(
                "web", runtime="local", secrets=["DAYTONA_API_KEY"]
            )

        assert opened.environments.list() == []
        assert opened.runtimes.get("local").list() == []

    def test_bind_invalid_name_rejected(self, opened: Arbe, env_name: str) -> None:
        with pytest.raises(InvalidName, match="binding name"):
            opened.environments.bind(env_name, "npm-token")

    def test_bind_upgrades_optional_to_required(
        self, opened: Arbe, env_name: str
    ) -> None:
        opened.environments.bind(env_name, "NPM_TOKEN", required=False)

        env, _ = opened.environments.bind(env_name, "NPM_TOKEN")

        assert env.binding("NPM_TOKEN") is not None
        assert env.binding("NPM_TOKEN").required is True  # type: ignore[union-attr]
        assert len(env.bindings) == 1

    def test_bind_optional_downgrades_required(
        self, opened: Arbe, env_name: str
    ) -> None:
        opened.environments.bind(env_name, "NPM_TOKEN")

        opened.environments.bind(env_name, "NPM_TOKEN", required=False)

        stored = opened.environments.get(env_name).binding("NPM_TOKEN")
        assert stored is not None
        assert stored.required is False

    def test_unbind_removes_binding(self, opened: Arbe, env_name: str) -> None:
        opened.environments.bind(env_name, "NPM_TOKEN")

        opened.environments.unbind(env_name, "NPM_TOKEN")

        assert opened.environments.get(env_name).bindings == ()

    def test_unbind_unbound_name_rejected(self, opened: Arbe, env_name: str) -> None:
        with pytest.raises(InvalidInput, match="not bound"):
            opened.environments.unbind(env_name, "NPM_TOKEN")

    def test_bind_unknown_environment_rejected(self, opened: Arbe) -> None:
        with pytest.raises(EnvironmentNotFound):
            opened.environments.bind("nowhere", "NPM_TOKEN")


class TestActiveEnvironment:
    def test_use_sets_active(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")
        opened.environments.create("api", runtime="local")

        opened.environments.use("api")

        assert opened.environments.active() == "api"

    def test_use_unknown_rejected(self, opened: Arbe) -> None:
        with pytest.raises(EnvironmentNotFound):
            opened.environments.use("nowhere")

    def test_thread_create_uses_active(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")
        opened.environments.create("api", runtime="local")
        opened.environments.use("api")

        thread = opened.threads.create("issue-42")

        assert thread.env == "api"

    def test_delete_active_clears_it(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")
        opened.environments.use("web")

        opened.environments.delete("web")

        assert opened.environments.active() is None

    def test_delete_other_keeps_active(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")
        opened.environments.create("api", runtime="local")
        opened.environments.use("web")

        opened.environments.delete("api")

        assert opened.environments.active() == "web"


class TestEnvironmentDelete:
    def test_delete_keeps_sandbox(self, opened: Arbe) -> None:
        env, _ = opened.environments.create("web", runtime="local")

        opened.environments.delete("web")

        assert opened.environments.list() == []
        assert (
            opened.runtimes.get("local").get(env.sandbox_id or "").id == env.sandbox_id
        )

    def test_delete_destroy_sandbox(self, opened: Arbe) -> None:
        env, _ = opened.environments.create("web", runtime="local")

        opened.environments.delete("web", destroy_sandbox=True)

        with pytest.raises(SandboxNotFound):
            opened.runtimes.get("local").get(env.sandbox_id or "")
        assert "sandbox.destroy" in env_actions(opened)

    def test_delete_rejected_while_dispatch_live(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")
        thread = opened.threads.create(env="web", model="builtin/shell")
        opened.threads.post(thread.id, "ls")

        with pytest.raises(Conflict, match=f"arbe thread cancel {thread.id}"):
            opened.environments.delete("web")

        assert opened.environments.get("web").name == "web"

    def test_delete_after_cancel_allowed(self, opened: Arbe) -> None:
        opened.environments.create("web", runtime="local")
        thread = opened.threads.create(env="web", model="builtin/shell")
        opened.threads.post(thread.id, "ls")
        opened.threads.cancel(thread.id)

        opened.environments.delete("web")

        assert opened.environments.list() == []

    def test_delete_unknown_rejected(self, opened: Arbe) -> None:
        with pytest.raises(EnvironmentNotFound):
            opened.environments.delete("nowhere")


class TestEnvironmentDiagnose:
    def test_diagnose_clean_environment(self, opened: Arbe) -> None:
        set_secret(opened, "GITHUB_TOKEN")
        set_secret(opened, "OPENROUTER_API_KEY", audience=SecretAudience.CAPABILITY)
        opened.environments.create("web", runtime="local", secrets=["GITHUB_TOKEN"])

        checks = opened.environments.diagnose("web")

        assert [c for c in checks if not c.ok] == []
        assert [c.name for c in checks] == [
            "secret GITHUB_TOKEN",
            "runtime local credential",
            "model openrouter/anthropic/claude-haiku-4.5",
            "sandbox",
        ]

    def test_diagnose_reports_every_problem(self, opened: Arbe) -> None:
        opened.environments.create(
            "web", runtime="local", secrets=["GITHUB_TOKEN", "NPM_TOKEN"]
        )

        checks = opened.environments.diagnose("web")

        failed = {c.name: c for c in checks if not c.ok}
        assert sorted(failed) == [
            "model openrouter/anthropic/claude-haiku-4.5",
            "secret GITHUB_TOKEN",
            "secret NPM_TOKEN",
        ]
        model_check = failed["model openrouter/anthropic/claude-haiku-4.5"]
        assert (
            failed["secret GITHUB_TOKEN"].fix == "arbe secret set GITHUB_TOKEN --shared"
        )
        assert failed["secret NPM_TOKEN"].fix == "arbe secret set NPM_TOKEN --shared"
        assert model_check.fix == (
            "arbe secret set OPENROUTER_API_KEY --audience capability"
        )

    def test_diagnose_optional_missing_warns(self, opened: Arbe) -> None:
        opened.environments.create(
            "web", runtime="local", optional_secrets=["SENTRY_DSN"]
        )

        check = check_named(opened.environments.diagnose("web"), "secret SENTRY_DSN")

        assert check.ok is True
        assert check.warning is True

    def test_diagnose_unshared_secret_fails(self, opened: Arbe) -> None:
        set_secret(opened, "GITHUB_TOKEN", shared=False)
        opened.environments.create("web", runtime="local", secrets=["GITHUB_TOKEN"])

        check = check_named(opened.environments.diagnose("web"), "secret GITHUB_TOKEN")

        assert check.ok is False
        assert "not shared" in check.detail

    def test_diagnose_secret_turned_capability_fails(self, opened: Arbe) -> None:
        set_secret(opened, "GITHUB_TOKEN")
        opened.environments.create("web", runtime="local", secrets=["GITHUB_TOKEN"])
        set_secret(opened, "GITHUB_TOKEN", audience=SecretAudience.CAPABILITY)

        check = check_named(opened.environments.diagnose("web"), "secret GITHUB_TOKEN")

        assert check.ok is False
        assert check.fix == "arbe env unbind-secret web GITHUB_TOKEN"

    def test_diagnose_process_key_warns(
        self, opened: Arbe, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-123")
        opened.environments.create("web", runtime="local")

        check = check_named(
            opened.environments.diagnose("web"),
            "model openrouter/anthropic/claude-haiku-4.5",
        )

        assert check.ok is True
        assert check.warning is True

    def test_diagnose_stopped_sandbox_will_start(self, opened: Arbe) -> None:
        env, _ = opened.environments.create("web", runtime="local")
        opened.runtimes.get("local").stop(env.sandbox_id or "")

        check = check_named(opened.environments.diagnose("web"), "sandbox")

        assert check.ok is True
        assert "dispatch will start it" in check.detail

    def test_diagnose_gone_sandbox_fails(self, opened: Arbe) -> None:
        env, _ = opened.environments.create("web", runtime="local")
        opened.runtimes.get("local").destroy(env.sandbox_id or "")

        check = check_named(opened.environments.diagnose("web"), "sandbox")

        assert check.ok is False
        assert "gone" in check.detail
        assert check.fix is not None
        assert "arbe env delete web" in check.fix

    def test_diagnose_unknown_environment_rejected(self, opened: Arbe) -> None:
        with pytest.raises(EnvironmentNotFound):
            opened.environments.diagnose("nowhere")
