"""Numbered schema migrations; each engine gets its own SQL where types differ."""

from __future__ import annotations

_SCHEMA_1 = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE houses (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    active_env TEXT,
    wrapped_key {blob} NOT NULL
);
CREATE TABLE secrets (
    house_id TEXT NOT NULL REFERENCES houses (id),
    name TEXT NOT NULL,
    audience TEXT NOT NULL,
    shared INTEGER NOT NULL,
    owner TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (house_id, name)
);
CREATE TABLE secret_versions (
    house_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    sealed {blob} NOT NULL,
    audience TEXT NOT NULL,
    shared INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (house_id, name, version)
);
CREATE TABLE environments (
    house_id TEXT NOT NULL REFERENCES houses (id),
    name TEXT NOT NULL,
    runtime TEXT NOT NULL,
    sandbox_id TEXT,
    allowed_repos TEXT NOT NULL,
    bindings TEXT NOT NULL,
    auto_stop_minutes INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (house_id, name)
);
CREATE TABLE agents (
    house_id TEXT NOT NULL REFERENCES houses (id),
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    instructions TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (house_id, name)
);
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    house_id TEXT NOT NULL REFERENCES houses (id),
    parent_ref TEXT,
    env TEXT,
    model TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX threads_by_house ON threads (house_id, created_at);
CREATE TABLE entries (
    id TEXT NOT NULL UNIQUE,
    thread_id TEXT NOT NULL REFERENCES threads (id),
    seq INTEGER NOT NULL,
    author TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    data TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (thread_id, seq)
);
CREATE TABLE dispatches (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads (id),
    house_id TEXT NOT NULL,
    trigger_seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires_at TEXT,
    attempts INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX dispatches_by_state ON dispatches (state, created_at);
CREATE INDEX dispatches_by_thread ON dispatches (thread_id, created_at);
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    house_id TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    secret TEXT,
    env TEXT,
    sandbox_id TEXT,
    thread_id TEXT,
    details TEXT
);
CREATE INDEX audit_by_house ON audit (house_id, at);
"""

# Every entry insert sends NOTIFY arbe_entries with the thread id, in the
# inserting transaction, so waiters wake when it commits. SQLite has no
# notifications (its waiters poll), so its side of this migration is empty.
_NOTIFY_ENTRIES_2 = """
CREATE FUNCTION arbe_notify_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('arbe_entries', NEW.thread_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER entries_notify AFTER INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION arbe_notify_entry();
"""

#: Migration number to SQL per engine. Append new numbers; never edit old ones.
#: SQLite runs a migration statement by statement (see `statements`), so its
#: SQL has no semicolons inside statements. PostgreSQL runs each migration as
#: one script, so its SQL may contain function bodies. An empty string is a
#: migration with nothing to do on that engine; its number is still recorded.
MIGRATIONS: dict[int, dict[str, str]] = {
    1: {
        "sqlite": _SCHEMA_1.format(blob="BLOB"),
        "postgres": _SCHEMA_1.format(blob="BYTEA"),
    },
    2: {"sqlite": "", "postgres": _NOTIFY_ENTRIES_2},
}

LATEST = max(MIGRATIONS)


def statements(sql: str) -> list[str]:
    """Split a migration's SQL into statements (no semicolons inside them)."""
    return [part.strip() for part in sql.split(";") if part.strip()]
