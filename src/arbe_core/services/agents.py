"""Bots of a house: the default bot `arbe` and any the user adds."""

from __future__ import annotations

from collections.abc import Callable

from arbe_core.errors import AgentNotFound, ConcurrentUpdate, Conflict, InvalidInput
from arbe_core.models import DEFAULT_AGENT, DEFAULT_MODEL, Agent, House
from arbe_core.names import check_model_ref, check_slug
from arbe_core.services._deps import Deps

__all__ = ["AgentService"]

DEFAULT_INSTRUCTIONS = (
    "You are arbe, a careful coding bot. Work in the sandbox with run_command; "
    "read before you change, run the tests, and report what you did briefly."
)


class AgentService:
    """Create, list and remove the bots of one house."""

    def __init__(
        self,
        deps: Deps,
        house: House,
        actor: str,
        providers: Callable[[], list[str]],
    ) -> None:
        self.deps = deps
        self.house = house
        self.actor = actor
        self.providers = providers

    def check_model(self, ref: str) -> str:
        """Return `ref` if its provider is registered, else raise `InvalidInput`."""
        return check_model_ref(ref, self.providers())

    def ensure_default(self) -> Agent:
        """Return the default bot `arbe`, creating it on first use.

        Several workers may run a new house's first dispatches at once. The
        ones whose insert loses that race read the bot the winner stored.
        """
        try:
            return self._get_or_create_default()
        except ConcurrentUpdate:
            with self.deps.storage.unit_of_work(write=False) as uow:
                agent = uow.agents.get(self.house.id, DEFAULT_AGENT)
            if agent is None:
                raise
            return agent

    def _get_or_create_default(self) -> Agent:
        with self.deps.storage.unit_of_work() as uow:
            agent = uow.agents.get(self.house.id, DEFAULT_AGENT)
            if agent is None:
                agent = Agent(
                    house_id=self.house.id,
                    name=DEFAULT_AGENT,
                    model=DEFAULT_MODEL,
                    instructions=DEFAULT_INSTRUCTIONS,
                    created_at=self.deps.clock.now(),
                )
                uow.agents.save(agent)
                uow.commit()
        return agent

    def create(
        self, name: str, model: str | None = None, instructions: str | None = None
    ) -> Agent:
        """Create a bot; its model defaults to the house default model."""
        check_slug(name, "bot")
        ref = self.check_model(model or DEFAULT_MODEL)
        if instructions is not None and len(instructions) > 32_000:
            raise InvalidInput("Bot instructions are limited to 32,000 characters.")
        self.ensure_default()
        with self.deps.storage.unit_of_work() as uow:
            if uow.agents.get(self.house.id, name) is not None:
                raise Conflict(f"Bot {name!r} already exists.")
            agent = Agent(
                house_id=self.house.id,
                name=name,
                model=ref,
                instructions=instructions or DEFAULT_INSTRUCTIONS,
                created_at=self.deps.clock.now(),
            )
            uow.agents.save(agent)
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                "agent.create",
                details={"agent": name, "model": ref},
            )
            uow.commit()
        return agent

    def list(self) -> list[Agent]:
        """Return the house's bots, the default one included."""
        self.ensure_default()
        with self.deps.storage.unit_of_work(write=False) as uow:
            return uow.agents.list(self.house.id)

    def get(self, name: str) -> Agent:
        """Return bot `name`, or raise `AgentNotFound`."""
        if name == DEFAULT_AGENT:
            return self.ensure_default()
        with self.deps.storage.unit_of_work(write=False) as uow:
            agent = uow.agents.get(self.house.id, name)
        if agent is None:
            raise AgentNotFound(name)
        return agent

    def delete(self, name: str) -> Agent:
        """Delete a bot; the default bot cannot be deleted."""
        if name == DEFAULT_AGENT:
            raise InvalidInput(
                f"The default bot {DEFAULT_AGENT!r} cannot be deleted; change its model "
                "per thread with `arbe thread create --model REF` instead."
            )
        agent = self.get(name)
        with self.deps.storage.unit_of_work() as uow:
            uow.agents.delete(self.house.id, name)
            self.deps.audit(
                uow, self.house.id, self.actor, "agent.delete", details={"agent": name}
            )
            uow.commit()
        return agent
