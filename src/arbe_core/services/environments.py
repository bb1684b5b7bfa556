"""Environments: bindings, allowed repos, the active one, and the preflight."""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from arbe_core.errors import (
    ArbeError,
    Conflict,
    EnvironmentNotFound,
    InvalidInput,
    SandboxNotFound,
)
from arbe_core.models import (
    DEFAULT_MODEL,
    Environment,
    House,
    SecretAudience,
    SecretBinding,
)
from arbe_core.names import check_secret_name, check_slug, split_model_ref
from arbe_core.ports import Models, Runtime, Runtimes
from arbe_core.runtime import (
    ENV_LABEL,
    HOUSE_LABEL,
    Check,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
)
from arbe_core.services._deps import Deps
from arbe_core.services.secrets import SecretService

__all__ = ["EnvironmentService", "check_repo_url"]

logger = logging.getLogger("arbe.env")

#: The largest auto-stop a signed 32-bit integer holds, so that every store
#: and runtime API can take it.
MAX_AUTO_STOP_MINUTES = 2**31 - 1
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")
_URL_SCHEMES = ("https://", "ssh://", "file://", "git://", "http://")


def check_repo_url(url: str, path_exists: Callable[[str], bool]) -> str:
    """Return `url` if git can clone it, else raise `InvalidInput`.

    Accepted: https (and http), ssh, git, `git@host:path`, `file://` URLs and
    existing local paths.
    """
    if url.startswith(_URL_SCHEMES) and len(url.split("://", 1)[1]) > 0:
        if any(c.isspace() for c in url):
            raise InvalidInput(f"Invalid repo {url!r}: a URL has no spaces.")
        return url
    if _SCP_LIKE.fullmatch(url) or (url and path_exists(url)):
        return url
    raise InvalidInput(
        f"Invalid repo {url!r}: use an https://, ssh://, git@host:path or file:// "
        "URL, or the path of an existing local repository."
    )


class EnvironmentService:
    """The environments of one house."""

    def __init__(
        self,
        deps: Deps,
        house: House,
        actor: str,
        runtimes: Runtimes,
        models: Models | None = None,
        path_exists: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self.deps = deps
        self.house = house
        self.actor = actor
        self.runtimes = runtimes
        self.models = models
        self.path_exists = path_exists
        self.secrets = SecretService(deps, house, actor)

    # --- Reading -------------------------------------------------------------

    def list(self) -> list[Environment]:
        """Return the house's environments."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            return uow.environments.list(self.house.id)

    def get(self, name: str) -> Environment:
        """Return environment `name`, or raise `EnvironmentNotFound`."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            env = uow.environments.get(self.house.id, name)
        if env is None:
            raise EnvironmentNotFound(name)
        return env

    def active(self) -> str | None:
        """Return the name of the house's active environment, or None."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            house = uow.houses.get(self.house.id)
        return house.active_env if house else None

    # --- Creating ------------------------------------------------------------

    def create(
        self,
        name: str,
        runtime: str = "daytona",
        sandbox: str | None = None,
        repos: Sequence[str] = (),
        secrets: Sequence[str] = (),
        optional_secrets: Sequence[str] = (),
        auto_stop_minutes: int | None = None,
        progress: Callable[[str], None] = lambda _: None,
    ) -> tuple[Environment, builtins.list[str]]:
        """Create an environment and bind or provision its sandbox.

        Without `sandbox`, a new sandbox is provisioned on `runtime` with the
        first repo cloned. With `sandbox`, an existing sandbox of that id or
        name is bound, and an unknown name is provisioned under that name. If
        provisioning or recording fails, nothing is recorded and a sandbox
        made by this call is destroyed. When the house has no active
        environment, the new one becomes active.

        Returns:
            The environment, and warnings (such as a bound secret not set yet).
        """
        check_slug(name, "environment")
        self.runtimes.credential_name(runtime)  # raises RuntimeNotFound
        allowed = tuple(
            dict.fromkeys(check_repo_url(r, self.path_exists) for r in repos)
        )
        bindings, warnings = self._new_bindings(secrets, optional_secrets)
        if auto_stop_minutes is not None and not (
            0 <= auto_stop_minutes <= MAX_AUTO_STOP_MINUTES
        ):
            raise InvalidInput(
                f"Invalid auto-stop {auto_stop_minutes}: use 0 (never) or up to "
                f"{MAX_AUTO_STOP_MINUTES} minutes."
            )
        with self.deps.storage.unit_of_work(write=False) as uow:
            if uow.environments.get(self.house.id, name) is not None:
                raise Conflict(
                    f"Environment {name!r} already exists; delete it first with "
                    f"`arbe env delete {name}`, or pick another name."
                )

        info, created = self._sandbox_for(
            name, runtime, sandbox, allowed, auto_stop_minutes, progress
        )
        now = self.deps.clock.now()
        env = Environment(
            house_id=self.house.id,
            name=name,
            runtime=runtime,
            sandbox_id=info.id,
            allowed_repos=allowed,
            bindings=bindings,
            created_at=now,
            updated_at=now,
            auto_stop_minutes=auto_stop_minutes,
        )
        try:
            self._record_new(env, info, created)
        except BaseException:
            if created:
                self._destroy_quietly(self.runtimes.get(runtime), info.id)
            raise
        return env, warnings

    def _new_bindings(
        self, required: Sequence[str], optional: Sequence[str]
    ) -> tuple[tuple[SecretBinding, ...], builtins.list[str]]:
        bindings: dict[str, SecretBinding] = {}
        warnings: builtins.list[str] = []
        for names, is_required in ((optional, False), (required, True)):
            for binding_name in names:
                check_secret_name(binding_name, "binding")
                warning = self._check_bindable(binding_name)
                if warning and warning not in warnings:
                    warnings.append(warning)
                bindings[binding_name] = SecretBinding(binding_name, is_required)
        return tuple(bindings.values()), warnings

    def _check_bindable(self, name: str) -> str | None:
        with self.deps.storage.unit_of_work(write=False) as uow:
            secret = uow.secrets.get(self.house.id, name)
        if secret is None:
            return (
                f"secret {name} is not set yet; set it before dispatch with "
                f"`arbe secret set {name}`."
            )
        if secret.audience is SecretAudience.CAPABILITY:
            raise InvalidInput(
                f"Secret {name!r} has audience capability and cannot be bound: "
                "capability secrets are for arbe itself and never enter a sandbox."
            )
        return None

    def _sandbox_for(
        self,
        env_name: str,
        runtime_name: str,
        sandbox: str | None,
        repos: tuple[str, ...],
        auto_stop_minutes: int | None,
        progress: Callable[[str], None],
    ) -> tuple[SandboxInfo, bool]:
        runtime = self.runtimes.get(runtime_name)
        if sandbox is not None:
            try:
                return runtime.get(sandbox), False
            except SandboxNotFound:
                check_slug(sandbox, "sandbox")
        spec = SandboxSpec(
            labels={HOUSE_LABEL: self.house.id, ENV_LABEL: env_name},
            name=sandbox,
            repo=repos[0] if repos else None,
            auto_stop_minutes=auto_stop_minutes,
        )
        before = self._labelled_sandboxes(runtime, spec)
        progress(f"Provisioning a sandbox on {runtime_name}")
        try:
            info = runtime.provision(spec)
        except BaseException:
            self._destroy_leftovers(runtime, spec, before)
            raise
        logger.info("provisioned sandbox %s on %s", info.id, runtime_name)
        return info, True

    @staticmethod
    def _labelled_sandboxes(runtime: Runtime, spec: SandboxSpec) -> set[str] | None:
        """Return the ids of the runtime's sandboxes that carry the spec's labels.

        None means the runtime could not list them.
        """
        try:
            found = runtime.list()
        except ArbeError:
            logger.warning("could not list the sandboxes of %s", runtime.name)
            return None
        return {
            info.id
            for info in found
            if all(info.labels.get(k) == v for k, v in spec.labels.items())
        }

    def _destroy_leftovers(
        self, runtime: Runtime, spec: SandboxSpec, before: set[str] | None
    ) -> None:
        """Destroy sandboxes that a failed `provision` made and left behind.

        The runtime port requires `provision` to clean up after itself, and
        this catches a runtime that does not. Only sandboxes with the spec's labels
        that did not exist before the call are destroyed.
        """
        if before is None:
            return
        after = self._labelled_sandboxes(runtime, spec)
        for sandbox_id in sorted((after or set()) - before):
            logger.warning(
                "destroying sandbox %s left by a failed provision", sandbox_id
            )
            self._destroy_quietly(runtime, sandbox_id)

    def _record_new(self, env: Environment, info: SandboxInfo, created: bool) -> None:
        with self.deps.storage.unit_of_work() as uow:
            if uow.environments.get(self.house.id, env.name) is not None:
                raise Conflict(f"Environment {env.name!r} was created meanwhile.")
            uow.environments.save(env)
            house = uow.houses.get(self.house.id)
            if house is not None and house.active_env is None:
                uow.houses.set_active_env(self.house.id, env.name)
            if created:
                self.deps.audit(
                    uow,
                    self.house.id,
                    self.actor,
                    "sandbox.provision",
                    env=env.name,
                    sandbox_id=info.id,
                    details={"runtime": env.runtime},
                )
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                "env.create",
                env=env.name,
                sandbox_id=info.id,
                details={
                    "runtime": env.runtime,
                    "bindings": [b.name for b in env.bindings],
                    "allowed_repos": list(env.allowed_repos),
                },
            )
            uow.commit()

    @staticmethod
    def _destroy_quietly(runtime: Runtime, sandbox_id: str) -> None:
        # This runs while another error propagates, which must not be masked.
        try:
            runtime.destroy(sandbox_id)
        except Exception:
            logger.exception("could not destroy half-made sandbox %s", sandbox_id)

    # --- Changing ------------------------------------------------------------

    def bind(
        self, env_name: str, name: str, required: bool = True
    ) -> tuple[Environment, builtins.list[str]]:
        """Bind secret `name`: add it, or change whether it is required."""
        check_secret_name(name, "binding")
        warning = self._check_bindable(name)

        def add(env: Environment) -> dict[str, Any]:
            others = tuple(b for b in env.bindings if b.name != name)
            return {"bindings": (*others, SecretBinding(name, required))}

        updated = self._change(
            env_name, "env.bind", add, {"binding": name, "required": required}
        )
        return updated, [warning] if warning else []

    def unbind(self, env_name: str, name: str) -> Environment:
        """Remove the binding of `name`, or raise `InvalidInput` if not bound."""
        check_secret_name(name, "binding")

        def remove(env: Environment) -> dict[str, Any]:
            if env.binding(name) is None:
                raise InvalidInput(
                    f"Secret {name!r} is not bound to environment {env_name!r}; "
                    f"see `arbe env view {env_name}`."
                )
            return {"bindings": tuple(b for b in env.bindings if b.name != name)}

        return self._change(env_name, "env.unbind", remove, {"binding": name})

    def add_repo(self, env_name: str, url: str) -> Environment:
        """Add a repo to the environment's allowed repos."""
        check_repo_url(url, self.path_exists)

        def add(env: Environment) -> dict[str, Any]:
            return {"allowed_repos": tuple(dict.fromkeys((*env.allowed_repos, url)))}

        return self._change(env_name, "env.add_repo", add, {"repo": url})

    def _change(
        self,
        env_name: str,
        action: str,
        change: Callable[[Environment], dict[str, Any]],
        details: dict[str, object],
    ) -> Environment:
        """Apply `change` to the environment as it is now, and record it.

        The read and the write share one transaction, so two changes at once
        (two binds, say) cannot lose either, and a deleted environment is not
        saved back.

        Raises:
            EnvironmentNotFound: no environment has the name.
        """
        with self.deps.storage.unit_of_work() as uow:
            env = uow.environments.get(self.house.id, env_name)
            if env is None:
                raise EnvironmentNotFound(env_name)
            updated = attrs.evolve(env, updated_at=self.deps.clock.now(), **change(env))
            uow.environments.save(updated)
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                action,
                env=env.name,
                sandbox_id=env.sandbox_id,
                details=details,
            )
            uow.commit()
        return updated

    def use(self, name: str) -> Environment:
        """Make `name` the house's active environment."""
        env = self.get(name)
        with self.deps.storage.unit_of_work() as uow:
            uow.houses.set_active_env(self.house.id, name)
            self.deps.audit(uow, self.house.id, self.actor, "env.use", env=name)
            uow.commit()
        return env

    def delete(self, name: str, destroy_sandbox: bool = False) -> Environment:
        """Delete the environment; keep its sandbox unless asked to destroy it.

        Raises:
            Conflict: a dispatch of the environment is running.
        """
        env = self.get(name)
        with self.deps.storage.unit_of_work(write=False) as uow:
            live = uow.dispatches.live_for_env(self.house.id, name)
        if live:
            raise Conflict(
                f"Environment {name!r} has a live dispatch ({live[0].id}); wait for "
                f"it or cancel it with `arbe thread cancel {live[0].thread_id}`."
            )
        if destroy_sandbox and env.sandbox_id:
            self.runtimes.get(env.runtime).destroy(env.sandbox_id)
        with self.deps.storage.unit_of_work() as uow:
            uow.environments.delete(self.house.id, name)
            house = uow.houses.get(self.house.id)
            if house is not None and house.active_env == name:
                uow.houses.set_active_env(self.house.id, None)
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                "env.delete",
                env=name,
                sandbox_id=env.sandbox_id,
                details={"sandbox_destroyed": destroy_sandbox},
            )
            if destroy_sandbox and env.sandbox_id:
                self.deps.audit(
                    uow,
                    self.house.id,
                    self.actor,
                    "sandbox.destroy",
                    env=name,
                    sandbox_id=env.sandbox_id,
                )
            uow.commit()
        return env

    # --- Diagnosing ----------------------------------------------------------

    def diagnose(
        self, name: str, agent: str = "arbe", model: str | None = None
    ) -> builtins.list[Check]:
        """Run the dispatch preflight on environment `name` and report every check."""
        env = self.get(name)
        checks = self.static_checks(env, agent, model)
        checks.append(self.sandbox_check(env))
        return checks

    def static_checks(
        self, env: Environment, agent: str, model: str | None
    ) -> builtins.list[Check]:
        """Check bindings, the runtime credential and the model key, all at once."""
        checks = [self._binding_check(env, b, agent) for b in env.bindings]
        checks.append(self._runtime_credential_check(env))
        checks.append(self.model_key_check(model or self._agent_model(agent)))
        return checks

    def _agent_model(self, agent: str) -> str:
        with self.deps.storage.unit_of_work(write=False) as uow:
            found = uow.agents.get(self.house.id, agent)
        return found.model if found else DEFAULT_MODEL

    def _binding_check(
        self, env: Environment, binding: SecretBinding, agent: str
    ) -> Check:
        label = f"secret {binding.name}"
        with self.deps.storage.unit_of_work(write=False) as uow:
            secret = uow.secrets.get(self.house.id, binding.name)
        fix_set = f"arbe secret set {binding.name} --shared"
        if secret is None:
            if not binding.required:
                return Check(
                    label, True, "optional and not set; skipped", fix_set, warning=True
                )
            return Check(label, False, "required and not set", fix_set)
        if secret.audience is SecretAudience.CAPABILITY:
            return Check(
                label,
                False,
                "audience is capability; capability secrets never enter a sandbox",
                f"arbe env unbind-secret {env.name} {binding.name}",
            )
        if not (secret.shared or secret.owner == f"bot:{agent}"):
            detail = "not shared, so the house's bots cannot use it"
            fix = f"printf '%s' \"$VALUE\" | arbe secret set {binding.name} --shared"
            if not binding.required:
                return Check(label, True, detail + "; skipped", fix, warning=True)
            return Check(label, False, detail, fix)
        return Check(label, True, f"set (version {secret.version}, shared)")

    def _runtime_credential_check(self, env: Environment) -> Check:
        credential = self.runtimes.credential_name(env.runtime)
        label = f"runtime {env.runtime} credential"
        if credential is None:
            return Check(label, True, "none needed")
        with self.deps.storage.unit_of_work(write=False) as uow:
            found = uow.secrets.get(self.house.id, credential) is not None
        if found:
            return Check(label, True, f"{credential} is set")
        return Check(
            label,
            False,
            f"{credential} is not set",
            f"arbe secret set {credential} --audience capability",
        )

    def model_key_check(self, model: str) -> Check:
        """Check that model ref `model` has its provider's key."""
        label = f"model {model}"
        if self.models is None:
            return Check(label, True, "not checked")
        provider, _ = split_model_ref(model)
        credential = self.models.credential_name(provider)
        if credential is None:
            return Check(label, True, "no key needed")
        source = self.models.key_source(provider)
        if source == "house":
            return Check(label, True, f"{credential} is set")
        if source == "process":
            return Check(
                label,
                True,
                f"{credential} comes from this process's environment, not the house",
                f"arbe secret set {credential} --audience capability",
                warning=True,
            )
        return Check(
            label,
            False,
            f"{credential} is not set",
            f"arbe secret set {credential} --audience capability",
        )

    def sandbox_check(self, env: Environment) -> Check:
        """Ping the environment's sandbox and report its state."""
        label = "sandbox"
        if env.sandbox_id is None:
            return Check(
                label, False, "no sandbox recorded", f"arbe env delete {env.name}"
            )
        try:
            health = self.runtimes.get(env.runtime).ping(env.sandbox_id)
        except SandboxNotFound:
            return Check(
                label,
                False,
                f"{env.sandbox_id} is gone",
                f"arbe env delete {env.name} && arbe env create {env.name} --runtime {env.runtime}",
            )
        except ArbeError as exc:
            return Check(label, False, f"{env.sandbox_id}: {exc.message}", None)
        state = health.state
        if state is SandboxState.STARTED:
            return Check(
                label, True, f"{env.sandbox_id} is started ({health.latency_ms:.0f} ms)"
            )
        if state in (
            SandboxState.STOPPED,
            SandboxState.ARCHIVED,
            SandboxState.SLEEPING,
        ):
            return Check(
                label, True, f"{env.sandbox_id} is {state}; dispatch will start it"
            )
        if state in (SandboxState.STARTING, SandboxState.CREATING):
            return Check(label, True, f"{env.sandbox_id} is {state}", warning=True)
        return Check(
            label,
            False,
            f"{env.sandbox_id} is {state}",
            f"arbe sandbox start {env.sandbox_id} --runtime {env.runtime}",
        )
