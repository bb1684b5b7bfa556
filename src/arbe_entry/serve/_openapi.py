"""The OpenAPI 3.0 document of the JSON API, written by hand.

Each route in `_api.routes()` has an operation here; a test checks that the
two lists agree. Name patterns come from `arbe_core.names`, so the document
cannot drift from the rules the services enforce.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from arbe_core import names

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _pattern(regex: Any) -> str:
    return f"^(?:{regex.pattern})$"


SECRET_NAME: Schema = {
    "type": "string",
    "pattern": _pattern(names.SECRET_NAME_PATTERN),
    "maxLength": names.MAX_SECRET_NAME,
}
SLUG: Schema = {
    "type": "string",
    "pattern": _pattern(names.SLUG_PATTERN),
    "maxLength": names.MAX_SLUG,
}
TIME: Schema = {"type": "string", "format": "date-time"}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def _object(required: list[str], properties: dict[str, Schema]) -> Schema:
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        # OpenAPI 3.0 rejects an empty `required` list.
        schema["required"] = required
    return schema


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "type", "message"],
        "properties": {
            "error": {"type": "string", "description": "A short machine code."},
            "type": {"type": "string"},
            "message": {"type": "string", "description": "One or two sentences."},
        },
    },
    "House": {
        "type": "object",
        "required": ["id", "name", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "created_at": TIME,
            "active_env": _nullable({"type": "string"}),
        },
    },
    "Secret": {
        "type": "object",
        "description": "A secret's metadata; the value is never returned.",
        "required": ["name", "audience", "shared", "owner", "version"],
        "properties": {
            "name": {"type": "string"},
            "audience": {"type": "string", "enum": ["environment", "capability"]},
            "shared": {"type": "boolean"},
            "owner": {"type": "string"},
            "version": {"type": "integer"},
            "created_at": TIME,
            "updated_at": TIME,
            "deleted": {"type": "boolean"},
        },
    },
    "SecretWrite": _object(
        ["value"],
        {
            "value": {
                "type": "string",
                "minLength": 1,
                "description": "Non-empty UTF-8 text, at most 64 KiB; write-only.",
            },
            "audience": _nullable(
                {"type": "string", "enum": ["environment", "capability"]}
            ),
            "shared": _nullable({"type": "boolean"}),
        },
    ),
    "Binding": {
        "type": "object",
        "required": ["name", "required"],
        "properties": {"name": {"type": "string"}, "required": {"type": "boolean"}},
    },
    "Environment": {
        "type": "object",
        "required": ["name", "runtime", "sandbox_id", "allowed_repos", "bindings"],
        "properties": {
            "name": {"type": "string"},
            "runtime": {"type": "string"},
            "sandbox_id": _nullable({"type": "string"}),
            "allowed_repos": {"type": "array", "items": {"type": "string"}},
            "bindings": {"type": "array", "items": _ref("Binding")},
            "auto_stop_minutes": _nullable({"type": "integer"}),
            "active": {"type": "boolean"},
            "created_at": TIME,
            "updated_at": TIME,
            "warnings": {"type": "array", "items": {"type": "string"}},
            "deleted": {"type": "boolean"},
            "sandbox_destroyed": {"type": "boolean"},
        },
    },
    "EnvironmentCreate": _object(
        ["name"],
        {
            "name": SLUG,
            "runtime": _nullable(
                {
                    "type": "string",
                    "description": "A registered runtime; daytona when absent.",
                    "example": "daytona",
                }
            ),
            "sandbox_id": _nullable(
                {
                    "type": "string",
                    "description": (
                        "Bind this existing sandbox (id or name); an unknown name "
                        "is provisioned under that name. Absent: provision a new one."
                    ),
                }
            ),
            "repos": _nullable(
                {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Repos a bot may work on; the first is cloned.",
                }
            ),
            "secrets": _nullable({"type": "array", "items": SECRET_NAME}),
            "optional_secrets": _nullable({"type": "array", "items": SECRET_NAME}),
            "auto_stop_minutes": _nullable({"type": "integer", "minimum": 0}),
        },
    ),
    "Check": {
        "type": "object",
        "required": ["name", "ok", "detail"],
        "properties": {
            "name": {"type": "string"},
            "ok": {"type": "boolean"},
            "detail": {"type": "string"},
            "fix": _nullable({"type": "string"}),
            "warning": {"type": "boolean"},
        },
    },
    "Diagnosis": {
        "type": "object",
        "required": ["env", "ok", "checks"],
        "properties": {
            "env": {"type": "string"},
            "ok": {"type": "boolean"},
            "checks": {"type": "array", "items": _ref("Check")},
        },
    },
    "Runtime": {
        "type": "object",
        "required": ["name", "credential", "credential_set"],
        "properties": {
            "name": {"type": "string"},
            "credential": _nullable({"type": "string"}),
            "credential_set": {"type": "boolean"},
        },
    },
    "Sandbox": {
        "type": "object",
        "required": ["id", "name", "runtime", "state"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "runtime": {"type": "string"},
            "state": {"type": "string"},
            "raw_state": _nullable({"type": "string"}),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "created_at": _nullable(TIME),
            "workdir": _nullable({"type": "string"}),
            "details": {"type": "object"},
        },
    },
    "Dispatch": {
        "type": "object",
        "required": ["id", "state", "trigger_seq", "attempts"],
        "properties": {
            "id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["queued", "running", "completed", "failed", "cancelled"],
            },
            "trigger_seq": {"type": "integer"},
            "attempts": {"type": "integer"},
            "error": _nullable({"type": "string"}),
            "updated_at": TIME,
        },
    },
    "Thread": {
        "type": "object",
        "required": ["id", "parent_ref", "env", "model", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "parent_ref": _nullable({"type": "string"}),
            "env": _nullable({"type": "string"}),
            "model": _nullable({"type": "string"}),
            "created_at": TIME,
            "dispatch": {"nullable": True, "allOf": [_ref("Dispatch")]},
        },
    },
    "ThreadCreate": _object(
        [],
        {
            "parent_ref": _nullable(
                {"type": "string", "description": "What the thread is about."}
            ),
            "env": _nullable(
                {
                    "type": "string",
                    "description": "Environment; the house's active one when absent.",
                }
            ),
            "model": _nullable(
                {
                    "type": "string",
                    "description": "Model ref every bot of the thread uses.",
                    "example": "builtin/shell",
                }
            ),
        },
    ),
    "Entry": {
        "type": "object",
        "required": ["id", "thread_id", "seq", "author", "kind", "body"],
        "properties": {
            "id": {"type": "string"},
            "thread_id": {"type": "string"},
            "seq": {"type": "integer"},
            "author": {"type": "string"},
            "kind": {
                "type": "string",
                "enum": ["message", "tool_call", "tool_result", "status"],
            },
            "body": {"type": "string"},
            "data": {"type": "object"},
            "created_at": TIME,
        },
    },
    "EntryCreate": _object(
        ["text"],
        {
            "text": {
                "type": "string",
                "minLength": 1,
                "description": "What the bot should do.",
            },
            "start_worker": _nullable(
                {
                    "type": "boolean",
                    "description": "Start a background worker when none runs "
                    "(default true).",
                }
            ),
        },
    ),
    "EntryPosted": {
        "allOf": [
            _ref("Entry"),
            {
                "type": "object",
                "required": ["dispatch", "worker_started"],
                "properties": {
                    "dispatch": _ref("Dispatch"),
                    "worker_started": {"type": "boolean"},
                },
            },
        ]
    },
}


def _error(description: str) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


#: Errors that any operation may return.
COMMON_ERRORS: dict[str, Schema] = {
    "400": _error("The request cannot be read (bad JSON or a bad Host header)."),
    "401": _error("A token is required and none (or a wrong one) was sent."),
    "403": _error("A cross-site request was rejected."),
    "422": _error("A value breaks a rule (a name, a field type, an unknown field)."),
}


def _op(
    summary: str,
    responses: dict[str, Schema],
    *,
    body: str | None = None,
    parameters: list[Schema] | None = None,
    errors: tuple[str, ...] = (),
) -> Schema:
    operation: Schema = {"summary": summary, "parameters": parameters or []}
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        errors = (*errors, "413", "415")
    operation["responses"] = {**responses, **COMMON_ERRORS}
    for status in errors:
        operation["responses"][status] = _error(_ERROR_TEXT[status])
    return operation


_ERROR_TEXT = {
    "404": "Not found.",
    "409": "Conflicts with the current state, or a credential secret is missing.",
    "413": "The body is over 1 MiB.",
    "415": "The body is not application/json.",
    "503": "A runtime or service arbe needs did not answer; try again later.",
    "504": "A runtime operation timed out.",
}


def _ok(description: str, schema: Schema, status: str = "200") -> dict[str, Schema]:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _list_of(name: str) -> Schema:
    return {"type": "array", "items": _ref(name)}


def _path(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


SECRET = _path("name", SECRET_NAME, "Secret name.")
ENV = _path("name", SLUG, "Environment name.")
THREAD = _path("thread_id", {"type": "string"}, "Thread id (thr_...).")
RUNTIME = _path("runtime", {"type": "string"}, "Runtime name, such as daytona.")


def _paths() -> dict[str, Schema]:
    return {
        "/api/house": {
            "get": _op(
                "Show the house the server serves.", _ok("The house.", _ref("House"))
            )
        },
        "/api/secrets": {
            "get": _op(
                "List the house's secrets (metadata only).",
                _ok("The secrets.", _list_of("Secret")),
            )
        },
        "/api/secrets/{name}": {
            "parameters": [SECRET],
            "get": _op(
                "Show a secret's metadata.",
                _ok("The secret.", _ref("Secret")),
                errors=("404",),
            ),
            "put": _op(
                "Create or rotate a secret; the value is write-only.",
                {
                    **_ok("Rotated to a new version.", _ref("Secret")),
                    **_ok("Created.", _ref("Secret"), "201"),
                },
                body="SecretWrite",
                errors=("409",),
            ),
            "delete": _op(
                "Delete a secret and its kept versions.",
                _ok("Deleted.", _ref("Secret")),
                errors=("404",),
            ),
        },
        "/api/environments": {
            "get": _op(
                "List the house's environments.",
                _ok("The environments.", _list_of("Environment")),
            ),
            "post": _op(
                "Create an environment, provisioning its sandbox unless "
                "sandbox_id names one. Answers 409 before provisioning when the "
                "runtime's credential secret (DAYTONA_API_KEY for daytona) is not set.",
                _ok("Created.", _ref("Environment"), "201"),
                body="EnvironmentCreate",
                errors=("404", "409", "503", "504"),
            ),
        },
        "/api/environments/{name}": {
            "parameters": [ENV],
            "get": _op(
                "Show an environment.",
                _ok("The environment.", _ref("Environment")),
                errors=("404",),
            ),
            "delete": _op(
                "Delete an environment; its sandbox is kept unless destroy_sandbox.",
                _ok("Deleted.", _ref("Environment")),
                parameters=[
                    _query(
                        "destroy_sandbox",
                        {"type": "string", "enum": ["true", "false"]},
                        "Destroy the sandbox too.",
                    )
                ],
                errors=("404", "409", "503", "504"),
            ),
        },
        "/api/environments/{name}/diagnose": {
            "parameters": [ENV],
            "get": _op(
                "Run the dispatch preflight on an environment and report every check.",
                _ok("The checks; ok is false when one failed.", _ref("Diagnosis")),
                errors=("404",),
            ),
        },
        "/api/runtimes": {
            "get": _op(
                "List the registered runtimes and whether their credential is set.",
                _ok("The runtimes.", _list_of("Runtime")),
            )
        },
        "/api/runtimes/{runtime}/sandboxes": {
            "parameters": [RUNTIME],
            "get": _op(
                "List the house's own sandboxes on a runtime.",
                _ok("The sandboxes.", _list_of("Sandbox")),
                errors=("404", "409", "503", "504"),
            ),
        },
        "/api/threads": {
            "get": _op(
                "List the newest threads first.",
                _ok("The threads.", _list_of("Thread")),
                parameters=[
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 10000},
                        "At most this many (default 50).",
                    )
                ],
            ),
            "post": _op(
                "Create a thread.",
                _ok("Created.", _ref("Thread"), "201"),
                body="ThreadCreate",
                errors=("404",),
            ),
        },
        "/api/threads/{thread_id}": {
            "parameters": [THREAD],
            "get": _op(
                "Show a thread and its newest dispatch.",
                _ok("The thread.", _ref("Thread")),
                errors=("404",),
            ),
        },
        "/api/threads/{thread_id}/entries": {
            "parameters": [THREAD],
            "get": _op(
                "List a thread's entries past a seq.",
                _ok("The entries.", _list_of("Entry")),
                parameters=[
                    _query(
                        "after",
                        {"type": "integer", "minimum": 0, "maximum": 2**62},
                        "Only entries after this seq (default 0).",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 10000},
                        "At most this many (default 1000).",
                    ),
                ],
                errors=("404",),
            ),
            "post": _op(
                "Append a user entry; a dispatch is queued when none is live, and "
                "a background worker starts unless start_worker is false.",
                _ok("Appended.", _ref("EntryPosted"), "201"),
                body="EntryCreate",
                errors=("404",),
            ),
        },
        "/api/threads/{thread_id}/events": {
            "parameters": [THREAD],
            "get": _op(
                "Stream the thread's entries and dispatch state as server-sent "
                "events (entry, dispatch, end) until the dispatch ends.",
                {
                    "200": {
                        "description": "An event stream; entry ids are seqs.",
                        "content": {
                            "text/event-stream": {"schema": {"type": "string"}}
                        },
                    }
                },
                parameters=[
                    _query(
                        "after",
                        {"type": "integer", "minimum": 0, "maximum": 2**62},
                        "Start after this seq; Last-Event-ID takes precedence.",
                    )
                ],
                errors=("404",),
            ),
        },
    }


@functools.cache
def document() -> Schema:
    """Return the OpenAPI document."""
    from arbe_entry import __version__

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "arbe",
            "version": __version__,
            "description": (
                "The house of an `arbe serve` process: secrets (values are "
                "write-only), environments, sandboxes, threads and entries. "
                "Off the loopback interface every call needs "
                "`Authorization: Bearer TOKEN` (see `arbe house token create`)."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Either a token, or nothing when the server runs on loopback.
        "security": [{"bearer": []}, {}],
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document())
