"""One dispatch, run to its terminal: preflight, the agent loop, the status."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from arbe_core.chat import ChatMessage, ToolCall, ToolSpec
from arbe_core.dispatch.redact import Redactor, cut_middle
from arbe_core.dispatch.tools import (
    DEFAULT_TIMEOUT_S,
    DELEGATE_TASK,
    RUN_COMMAND,
    parse_arguments,
)
from arbe_core.errors import ArbeError, InvalidInput, SandboxNotFound
from arbe_core.models import (
    DEFAULT_AGENT,
    DEFAULT_MODEL,
    Agent,
    Dispatch,
    DispatchState,
    Entry,
    EntryKind,
    Environment,
    House,
    Thread,
)
from arbe_core.ports import ChatModel, Models, Runtime, Runtimes, UnitOfWork
from arbe_core.runtime import (
    ENV_LABEL,
    HOUSE_LABEL,
    THREAD_LABEL,
    SandboxSpec,
    SandboxState,
)
from arbe_core.services._deps import Deps
from arbe_core.services.agents import AgentService
from arbe_core.services.environments import EnvironmentService
from arbe_core.services.secrets import SecretService
from arbe_core.services.threads import append_entry

__all__ = ["DispatchFailed", "DispatchRunner", "Stopped"]

logger = logging.getLogger("arbe.dispatch")

_MENTION = re.compile(r"(?<![\w@])@([a-z0-9][a-z0-9_-]*)")
INTERRUPTED = (
    "interrupted: the worker running this call stopped before it finished; its "
    "outcome is unknown and arbe did not run it again"
)


class DispatchFailed(ArbeError):
    """The dispatch cannot go on. The message names what is missing and the fix."""


class Stopped(Exception):
    """The dispatch was cancelled or its lease was lost; stop without a status."""


@attrs.define
class _Work:
    """The model, tools, sandbox and secrets of one bot's loop."""

    agent: Agent
    model: ChatModel
    model_ref: str
    tools: list[ToolSpec]
    sandbox_id: str | None
    runtime: Runtime | None
    env_vars: dict[str, str]
    redact: Redactor
    delegate_of: str | None = None


class DispatchRunner:
    """Run dispatches of one house as worker `owner`."""

    def __init__(
        self,
        deps: Deps,
        house: House,
        owner: str,
        runtimes: Runtimes,
        models: Models,
        step_limit: int = 30,
        malformed_limit: int = 3,
        on_step: Callable[[], None] = lambda: None,
    ) -> None:
        self.deps = deps
        self.house = house
        self.owner = owner
        self.runtimes = runtimes
        self.models = models
        self.step_limit = step_limit
        self.malformed_limit = malformed_limit
        self.on_step = on_step
        self.agents = AgentService(deps, house, "system", models.providers)
        self.secrets = SecretService(deps, house, "system")
        self.envs = EnvironmentService(deps, house, "system", runtimes, models)

    # --- The whole dispatch --------------------------------------------------

    def run(self, dispatch: Dispatch) -> DispatchState:
        """Run a claimed dispatch to a terminal and record it.

        Returns:
            The state the dispatch ended in (or its current one if it was
            cancelled or taken over meanwhile).
        """
        logger.info("dispatch %s started (attempt %d)", dispatch.id, dispatch.attempts)
        try:
            return self._run(dispatch)
        except Stopped:
            logger.info("dispatch %s stopped: cancelled or lease lost", dispatch.id)
            return self._state(dispatch.id)
        except ArbeError as exc:
            return self._finish(dispatch, DispatchState.FAILED, exc.message)
        except Exception as exc:
            logger.exception("dispatch %s failed with an internal error", dispatch.id)
            return self._finish(
                dispatch, DispatchState.FAILED, f"internal error: {type(exc).__name__}"
            )

    def _run(self, dispatch: Dispatch) -> DispatchState:
        """Run the bots on the trigger entry, then on any user entry posted meanwhile."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            thread = uow.threads.get(dispatch.thread_id)
        if thread is None:
            raise DispatchFailed(f"Thread {dispatch.thread_id!r} no longer exists.")
        self._mark_interrupted(thread.id)
        env = self.envs.get(thread.env) if thread.env else None
        trigger: int | None = dispatch.trigger_seq
        seen = 0
        late_after: int | None = None
        # The thread is read once, then only its new entries: a dispatch on a
        # long thread would otherwise read it again for every bot.
        entries = self._entries(thread.id)
        while trigger is not None:
            agents = self._choose_agents(entries, trigger)
            works = [self._prepare(thread, env, agent) for agent in agents]
            for work in works:
                entries = self._entries(thread.id, entries)
                messages = self._messages(env, work, entries, late_after)
                seen = max(seen, entries[-1].seq if entries else 0)
                self._loop(thread, work, messages)
            late_after = seen
            trigger = self._complete_unless_more(dispatch, seen)
            entries = self._entries(thread.id, entries)
        return self._state(dispatch.id)

    def _complete_unless_more(self, dispatch: Dispatch, seen: int) -> int | None:
        """Complete the dispatch, unless a user entry past `seen` still waits.

        Both happen in one transaction with the check, so an entry that
        `ThreadService.post` adds to this live dispatch is never left
        unanswered.

        Returns:
            The seq of the first waiting user entry, or None once completed.
        """
        with self.deps.storage.unit_of_work() as uow:
            last = uow.entries.last_seq(dispatch.thread_id)  # locks the thread
            seq = seen
            while seq < last:
                batch = uow.entries.after(dispatch.thread_id, seq, 1000)
                for entry in batch:
                    if entry.kind is EntryKind.MESSAGE and entry.author.startswith(
                        "user:"
                    ):
                        return entry.seq
                seq = batch[-1].seq if batch else last
            self._record_end(uow, dispatch, DispatchState.COMPLETED, None)
        return None

    def _finish(
        self, dispatch: Dispatch, state: DispatchState, error: str | None
    ) -> DispatchState:
        with self.deps.storage.unit_of_work() as uow:
            return self._record_end(uow, dispatch, state, error)

    def _record_end(
        self,
        uow: UnitOfWork,
        dispatch: Dispatch,
        state: DispatchState,
        error: str | None,
    ) -> DispatchState:
        """Record the terminal and its status entry, if the lease is still ours."""
        now = self.deps.clock.now()
        body = "completed" if state is DispatchState.COMPLETED else f"failed: {error}"
        current = uow.dispatches.get(dispatch.id)
        if (
            current is None
            or not current.state.live
            or current.lease_owner != self.owner
        ):
            return current.state if current else state
        append_entry(
            self.deps,
            uow,
            dispatch.thread_id,
            "system",
            EntryKind.STATUS,
            body,
            {"state": state.value, "dispatch": dispatch.id},
        )
        uow.dispatches.finish(dispatch.id, self.owner, state, error, now)
        self.deps.audit(
            uow,
            self.house.id,
            self.owner,
            f"dispatch.{state.value}",
            thread_id=dispatch.thread_id,
            details={"dispatch": dispatch.id, "error": error},
        )
        uow.commit()
        logger.info("dispatch %s %s", dispatch.id, state.value)
        return state

    def _state(self, dispatch_id: str) -> DispatchState:
        with self.deps.storage.unit_of_work(write=False) as uow:
            current = uow.dispatches.get(dispatch_id)
        return current.state if current else DispatchState.FAILED

    def _entries(self, thread_id: str, known: list[Entry] | None = None) -> list[Entry]:
        """Return the thread's entries, reading only those past `known`."""
        result: list[Entry] = list(known or [])
        with self.deps.storage.unit_of_work(write=False) as uow:
            while True:
                batch = uow.entries.after(
                    thread_id, result[-1].seq if result else 0, 5000
                )
                result.extend(batch)
                if len(batch) < 5000:
                    return result

    def _append(
        self,
        thread_id: str,
        author: str,
        kind: EntryKind,
        body: str,
        data: dict[str, Any],
    ) -> Entry:
        with self.deps.storage.unit_of_work() as uow:
            entry = append_entry(self.deps, uow, thread_id, author, kind, body, data)
            uow.commit()
        return entry

    def _append_result(
        self,
        thread_id: str,
        call_seq: int,
        author: str,
        body: str,
        data: dict[str, Any],
    ) -> bool:
        """Append the result of the tool call recorded at `call_seq`, once.

        A worker that lost its lease may finish a call after the next worker
        marked it interrupted, and a cancelled dispatch closes its calls while
        a new dispatch may start. Checking and appending in one transaction
        keeps every call id at exactly one result.

        Returns:
            False when the call already had a result, so nothing was added.
        """
        call_id = data.get("call_id")
        with self.deps.storage.unit_of_work() as uow:
            uow.entries.last_seq(thread_id)  # locks the thread
            seq = call_seq
            while True:
                batch = uow.entries.after(thread_id, seq, 1000)
                for entry in batch:
                    if (
                        entry.kind is EntryKind.TOOL_RESULT
                        and entry.data.get("call_id") == call_id
                    ):
                        return False
                if len(batch) < 1000:
                    break
                seq = batch[-1].seq
            append_entry(
                self.deps, uow, thread_id, author, EntryKind.TOOL_RESULT, body, data
            )
            uow.commit()
        return True

    def _check_live(self, dispatch_thread: str) -> None:
        """Raise `Stopped` when the thread's dispatch is no longer ours to run."""
        self.on_step()
        with self.deps.storage.unit_of_work(write=False) as uow:
            live = uow.dispatches.live_for_thread(dispatch_thread)
        if live is None or live.lease_owner != self.owner:
            raise Stopped()

    def _mark_interrupted(self, thread_id: str) -> None:
        """Give every recorded tool call without a result an `interrupted` result."""
        entries = self._entries(thread_id)
        answered = {
            e.data.get("call_id") for e in entries if e.kind is EntryKind.TOOL_RESULT
        }
        for entry in entries:
            call_id = entry.data.get("call_id")
            if entry.kind is EntryKind.TOOL_CALL and call_id not in answered:
                data = {
                    "call_id": call_id,
                    "name": entry.data.get("name"),
                    "interrupted": True,
                    "exit_code": None,
                }
                if entry.data.get("delegate"):
                    data["delegate"] = entry.data["delegate"]
                if self._append_result(
                    thread_id, entry.seq, entry.author, INTERRUPTED, data
                ):
                    logger.warning("tool call %s marked interrupted", call_id)

    # --- Choosing bots and preflight ----------------------------------------

    def _choose_agents(self, entries: list[Entry], trigger_seq: int) -> list[Agent]:
        """Pick who replies: @-named bots, else the last to reply, else the default."""
        trigger = next((e for e in entries if e.seq == trigger_seq), None)
        names: list[str] = []
        if trigger is not None:
            for name in _MENTION.findall(trigger.body):
                if name not in names:
                    names.append(name)
        agents: list[Agent] = []
        for name in names:
            try:
                agents.append(self.agents.get(name))
            except ArbeError:
                continue
        if agents:
            return agents
        for entry in reversed(entries):
            if entry.author.startswith("bot:") and entry.kind is EntryKind.MESSAGE:
                try:
                    return [self.agents.get(entry.author[4:])]
                except ArbeError:
                    break
        return [self.agents.get(DEFAULT_AGENT)]

    def _prepare(self, thread: Thread, env: Environment | None, agent: Agent) -> _Work:
        """Run the preflight for one bot; report every missing piece at once."""
        model_ref = thread.model or agent.model or DEFAULT_MODEL
        problems: list[str] = []
        key_check = self.envs.model_key_check(model_ref)
        if not key_check.ok:
            problems.append(
                f"{key_check.detail} @ model {model_ref}; fix: {key_check.fix}"
            )
        elif key_check.warning:
            self._append(
                thread.id,
                "system",
                EntryKind.STATUS,
                f"note: {key_check.detail}",
                {"state": "note"},
            )

        env_vars: dict[str, str] = {}
        if env is not None:
            for check in self.envs.static_checks(env, agent.name, model_ref)[:-1]:
                if not check.ok:
                    problems.append(f"{check.detail} @ {check.name}; fix: {check.fix}")
            if problems:
                # Report the sandbox as well, but do not start one for a
                # dispatch that fails anyway.
                problems.extend(self._wake_sandbox(env, start=False))
            else:
                env_vars = self._resolve_bindings(thread, env, agent)
                problems.extend(self._wake_sandbox(env))
        if problems:
            raise DispatchFailed("preflight failed: " + " | ".join(problems))

        model = self.models.get(model_ref)
        runtime = self.runtimes.get(env.runtime) if env else None
        tools = [RUN_COMMAND, DELEGATE_TASK] if env else []
        return _Work(
            agent=agent,
            model=model,
            model_ref=model_ref,
            tools=tools,
            sandbox_id=env.sandbox_id if env else None,
            runtime=runtime,
            env_vars=env_vars,
            redact=Redactor(env_vars),
        )

    def _resolve_bindings(
        self, thread: Thread, env: Environment, agent: Agent
    ) -> dict[str, str]:
        values: dict[str, str] = {}
        resolved: list[dict[str, object]] = []
        for binding in env.bindings:
            found = self.secrets.resolve(binding.name, agent=agent.name)
            if found is None:
                logger.warning("optional secret %s skipped: not usable", binding.name)
                continue
            value, secret = found
            values[binding.name] = value
            resolved.append({"name": binding.name, "version": secret.version})
        with self.deps.storage.unit_of_work() as uow:
            self.deps.audit(
                uow,
                self.house.id,
                self.owner,
                "dispatch.resolve",
                env=env.name,
                sandbox_id=env.sandbox_id,
                thread_id=thread.id,
                details={"agent": agent.name, "secrets": resolved},
            )
            uow.commit()
        return values

    def _wake_sandbox(self, env: Environment, start: bool = True) -> list[str]:
        """Ping the sandbox and, with `start`, start it once if it is stopped.

        Returns:
            The problems found, one line each.
        """
        if env.sandbox_id is None:
            return [f"no sandbox recorded @ environment {env.name}"]
        runtime = self.runtimes.get(env.runtime)
        start_fix = f"arbe sandbox start {env.sandbox_id} --runtime {env.runtime}"
        try:
            health = runtime.ping(env.sandbox_id)
            stopped = health.state in (SandboxState.STOPPED, SandboxState.ARCHIVED)
            if stopped and start:
                runtime.start(env.sandbox_id)
                with self.deps.storage.unit_of_work() as uow:
                    self.deps.audit(
                        uow,
                        self.house.id,
                        self.owner,
                        "sandbox.start",
                        env=env.name,
                        sandbox_id=env.sandbox_id,
                    )
                    uow.commit()
            elif health.state in (
                SandboxState.GONE,
                SandboxState.UNREACHABLE,
                SandboxState.ERROR,
            ):
                return [f"sandbox {env.sandbox_id} is {health.state}; fix: {start_fix}"]
        except SandboxNotFound:
            return [
                f"sandbox {env.sandbox_id} is gone; fix: arbe env delete {env.name} "
                f"&& arbe env create {env.name} --runtime {env.runtime}"
            ]
        except ArbeError as exc:
            return [f"sandbox {env.sandbox_id}: {exc.message}"]
        return []

    # --- Messages ------------------------------------------------------------

    def _system_prompt(self, env: Environment | None, work: _Work) -> str:
        lines = [work.agent.instructions]
        if env is not None:
            lines.append(
                f"You work in environment {env.name!r} on runtime {env.runtime}. "
                "Use run_command to run shell commands in its sandbox."
            )
            if env.allowed_repos:
                lines.append("Allowed repositories: " + ", ".join(env.allowed_repos))
            if work.env_vars:
                lines.append(
                    "Secrets available as environment variables: "
                    + ", ".join(sorted(work.env_vars))
                )
        return "\n\n".join(lines)

    def _messages(
        self,
        env: Environment | None,
        work: _Work,
        entries: list[Entry],
        late_after: int | None = None,
    ) -> list[ChatMessage]:
        """Build the chat for one bot from the thread's entries.

        The chat keeps the shape that chat APIs require, whatever order the
        entries arrived in. A user entry that arrived while tool calls were
        open follows their results, and user entries past seq `late_after`
        (posted during an earlier round of this dispatch) come last. Other
        bots' messages are user messages that name their author, so only this
        bot's own words are `assistant` messages.
        """
        own = f"bot:{work.agent.name}"
        messages = [ChatMessage("system", self._system_prompt(env, work))]
        waiting: list[ChatMessage] = []
        late: list[ChatMessage] = []
        open_calls: set[str] = set()
        for entry in entries:
            if entry.data.get("delegate") or entry.kind is EntryKind.STATUS:
                continue
            if entry.kind is EntryKind.MESSAGE and entry.author == own:
                messages.append(ChatMessage("assistant", entry.body))
            elif entry.kind is EntryKind.MESSAGE:
                text = entry.body
                if entry.author.startswith("bot:"):
                    text = f"(bot {entry.author[4:]} wrote) {text}"
                message = ChatMessage("user", text)
                if late_after is not None and entry.seq > late_after:
                    late.append(message)
                elif open_calls:
                    waiting.append(message)
                else:
                    messages.append(message)
            elif entry.kind is EntryKind.TOOL_CALL:
                call = ToolCall(
                    str(entry.data.get("call_id")),
                    str(entry.data.get("name")),
                    str(entry.data.get("arguments", "")),
                )
                open_calls.add(call.id)
                last = messages[-1]
                if last.role == "assistant":
                    messages[-1] = ChatMessage(
                        "assistant", last.content, (*last.tool_calls, call)
                    )
                else:
                    messages.append(ChatMessage("assistant", None, (call,)))
            elif entry.kind is EntryKind.TOOL_RESULT:
                call_id = str(entry.data.get("call_id"))
                messages.append(ChatMessage("tool", entry.body, tool_call_id=call_id))
                open_calls.discard(call_id)
                if not open_calls:
                    messages.extend(waiting)
                    waiting.clear()
        return [*messages, *waiting, *late]

    # --- The loop ------------------------------------------------------------

    def _loop(self, thread: Thread, work: _Work, messages: list[ChatMessage]) -> str:
        """Call the model and run its tools until it replies without tool calls.

        Returns:
            The bot's last text.
        """
        author = f"bot:{work.agent.name}"
        malformed = 0
        for _ in range(self.step_limit):
            self._check_live(thread.id)
            reply = work.model.complete(messages, work.tools)
            text = work.redact(reply.text or "")
            if text.strip():
                self._append(
                    thread.id,
                    author,
                    EntryKind.MESSAGE,
                    text,
                    self._tag(work, {"model": work.model_ref}),
                )
            calls = list(reply.tool_calls)
            # The model gets its calls back as they are stored: redacted.
            redacted_calls = tuple(
                attrs.evolve(c, arguments=work.redact.json_text(c.arguments))
                for c in calls
            )
            messages.append(ChatMessage("assistant", text or None, redacted_calls))
            if not calls:
                return text

            recorded: list[tuple[ToolCall, int]] = []
            for call in calls:
                data = self._tag(
                    work,
                    {
                        "call_id": call.id,
                        "name": call.name,
                        "arguments": work.redact.json_text(call.arguments),
                    },
                )
                entry = self._append(
                    thread.id,
                    author,
                    EntryKind.TOOL_CALL,
                    f"{call.name} {data['arguments']}",
                    data,
                )
                recorded.append((call, entry.seq))
            for index, (call, call_seq) in enumerate(recorded):
                try:
                    self._check_live(thread.id)
                    body, result_data, ok_args = self._run_tool(thread, work, call)
                except BaseException as exc:
                    self._close_calls(thread.id, author, work, recorded[index:], exc)
                    raise
                malformed = 0 if ok_args else malformed + 1
                self._append_result(
                    thread.id, call_seq, author, body, self._tag(work, result_data)
                )
                messages.append(ChatMessage("tool", body, tool_call_id=call.id))
            if malformed >= self.malformed_limit:
                raise DispatchFailed(
                    f"Model {work.model_ref} sent {malformed} malformed tool calls in a "
                    "row; try another model with `arbe thread create --model REF`."
                )
        raise DispatchFailed(
            f"Bot {work.agent.name!r} reached the step limit of {self.step_limit} "
            "without a final answer."
        )

    def _close_calls(
        self,
        thread_id: str,
        author: str,
        work: _Work,
        pending: list[tuple[ToolCall, int]],
        error: BaseException,
    ) -> None:
        """Record a result for each unfinished call of a step as the dispatch stops.

        After a lost lease nothing is written: the worker that took the
        dispatch over marks these calls interrupted.
        """
        if isinstance(error, Stopped):
            with self.deps.storage.unit_of_work(write=False) as uow:
                live = uow.dispatches.live_for_thread(thread_id)
            if live is not None:
                return
            reason = "the dispatch was cancelled"
        elif isinstance(error, ArbeError):
            reason = f"the dispatch failed: {error.message}"
        else:
            reason = (
                f"the dispatch failed with an internal error ({type(error).__name__})"
            )
        for call, call_seq in pending:
            data = {"call_id": call.id, "name": call.name, "exit_code": None}
            self._append_result(
                thread_id,
                call_seq,
                author,
                work.redact(f"error: not completed because {reason}"),
                self._tag(work, {**data, "error": "stopped"}),
            )

    @staticmethod
    def _tag(work: _Work, data: dict[str, Any]) -> dict[str, Any]:
        if work.delegate_of is not None:
            data["delegate"] = work.delegate_of
        return data

    def _run_tool(
        self, thread: Thread, work: _Work, call: ToolCall
    ) -> tuple[str, dict[str, Any], bool]:
        base: dict[str, Any] = {"call_id": call.id, "name": call.name}
        try:
            args = parse_arguments(
                call.name, call.arguments, [t.name for t in work.tools]
            )
        except InvalidInput as exc:
            return (
                work.redact(f"error: {exc.message}"),
                {**base, "error": "invalid_arguments"},
                False,
            )
        if call.name == RUN_COMMAND.name:
            body, data = self._run_command(work, args)
        else:
            body, data = self._delegate(thread, work, call, args)
        return body, {**base, **data}, True

    def _run_command(
        self, work: _Work, args: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        assert work.runtime is not None and work.sandbox_id is not None
        timeout = float(args.get("timeout_s", DEFAULT_TIMEOUT_S))
        try:
            result = work.runtime.exec(
                work.sandbox_id,
                args["command"],
                cwd=args.get("cwd"),
                env=work.env_vars,
                timeout=timeout,
            )
        except ArbeError as exc:
            return work.redact(f"error: {exc.message}"), {
                "exit_code": None,
                "error": exc.code,
            }
        parts = [
            f"exit code: {'unknown' if result.exit_code is None else result.exit_code}"
        ]
        if result.timed_out:
            parts.append(
                f"timed out after {timeout:g} s; the command and its children were killed"
            )
        if result.stdout:
            parts.append(
                ("output:\n" if result.combined else "stdout:\n") + result.stdout
            )
        if result.stderr:
            parts.append("stderr:\n" + result.stderr)
        body = cut_middle(work.redact("\n".join(parts)))
        return body, {
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "duration_s": round(result.duration_s, 3),
        }

    # --- delegate_task -------------------------------------------------------

    def _delegate(
        self, thread: Thread, work: _Work, call: ToolCall, args: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        env = self.envs.get(thread.env) if thread.env else None
        assert env is not None and work.runtime is not None
        repo = args.get("repo") or (env.allowed_repos[0] if env.allowed_repos else None)
        if repo is not None and repo not in env.allowed_repos:
            return (
                f"error: repo {repo!r} is not in the allowed repos of environment "
                f"{env.name!r}; add it with `arbe env create --repo` or pick one of: "
                + (", ".join(env.allowed_repos) or "none"),
                {"error": "repo_not_allowed"},
            )
        spec = SandboxSpec(
            labels={
                HOUSE_LABEL: self.house.id,
                ENV_LABEL: env.name,
                THREAD_LABEL: thread.id,
            },
            repo=repo,
            auto_stop_minutes=env.auto_stop_minutes,
        )
        try:
            info = work.runtime.provision(spec)
        except ArbeError as exc:
            return work.redact(
                f"error: could not provision a sandbox: {exc.message}"
            ), {"error": exc.code}
        self._audit_sandbox("sandbox.provision", env, info.id, thread.id)
        try:
            sub = attrs.evolve(
                work, tools=[RUN_COMMAND], sandbox_id=info.id, delegate_of=call.id
            )
            messages = [
                ChatMessage(
                    "system",
                    work.agent.instructions
                    + "\n\nYou are a helper given one task in a fresh sandbox with "
                    "the repository cloned. Do the task with run_command, then "
                    "answer with a short summary of what you did and found.",
                ),
                ChatMessage("user", args["task"]),
            ]
            summary = self._loop(thread, sub, messages)
        except ArbeError as exc:
            summary = work.redact(f"error: the helper stopped: {exc.message}")
        finally:
            try:
                work.runtime.destroy(info.id)
            finally:
                self._audit_sandbox("sandbox.destroy", env, info.id, thread.id)
        return summary or "(the helper gave no summary)", {"sandbox_id": info.id}

    def _audit_sandbox(
        self, action: str, env: Environment, sandbox_id: str, thread_id: str
    ) -> None:
        with self.deps.storage.unit_of_work() as uow:
            self.deps.audit(
                uow,
                self.house.id,
                self.owner,
                action,
                env=env.name,
                sandbox_id=sandbox_id,
                thread_id=thread_id,
            )
            uow.commit()
