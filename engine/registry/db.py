"""The registry database: SQLite in WAL mode, one schema, short immediate transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    produced_by TEXT NOT NULL,          -- import | finetune | compress
    source TEXT,                        -- import path or job id
    parent_version INTEGER,
    kind TEXT NOT NULL,                 -- model | adapter
    weight_format TEXT NOT NULL,        -- safetensors | gguf | pickle
    architecture TEXT,
    param_count INTEGER,
    size_bytes INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'ready',   -- ready | rejected
    metrics TEXT NOT NULL DEFAULT '{}',     -- JSON: eval metrics, compression report
    lineage TEXT NOT NULL DEFAULT '{}',     -- JSON: settings, data hash, base model
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS files (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    PRIMARY KEY (model, version, name),
    FOREIGN KEY (model, version) REFERENCES versions(model, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (model, alias)
);
CREATE TABLE IF NOT EXISTS deployments (
    target TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,                -- active | pending | failed
    updated_at REAL NOT NULL,
    history_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    at REAL NOT NULL,
    action TEXT NOT NULL,               -- deploy | rollback | auto-rollback
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    previous_model TEXT,
    previous_version INTEGER,
    user TEXT NOT NULL,
    reason TEXT,
    outcome TEXT NOT NULL DEFAULT 'ok'  -- ok | pending | failed
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    verb TEXT NOT NULL,
    arguments TEXT NOT NULL,            -- JSON
    result TEXT NOT NULL,               -- ok | failed
    detail TEXT,
    reason TEXT,
    history_id INTEGER
);
CREATE INDEX IF NOT EXISTS history_target ON history(target, id);
"""


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the lock
    # before reading what it will change, and concurrent deploys serialize instead of racing.
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    if connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        with transaction(connection):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; any exception (or a kill) leaves nothing applied."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
