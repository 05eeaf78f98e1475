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
            _create_schema(connection)
    return connection


def connect_read_only(path: Path) -> sqlite3.Connection:
    """For a deck home that cannot be written (a read-only mount): reads only, no pragma that
    writes, no schema change. A WAL database whose -shm cannot be created opens only as
    `immutable` (fine: nobody can write it either). No database at all reads as empty."""
    if not path.exists():
        return _empty_registry()
    uri = path.resolve().as_uri()
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
    try:
        connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        connection.close()
        connection = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
    connection.row_factory = sqlite3.Row
    if connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        connection.close()  # created but never written (the disk filled first): nothing in it
        return _empty_registry()
    return connection


def _empty_registry() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.row_factory = sqlite3.Row
    _create_schema(connection)
    return connection


def _create_schema(connection: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; any exception (or a kill) leaves nothing applied."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        _roll_back(connection)
        raise
    try:
        connection.execute("COMMIT")
    except BaseException:
        _roll_back(connection)
        raise


def _roll_back(connection: sqlite3.Connection) -> None:
    """Undo the open transaction. SQLite may already have rolled it back itself (a full disk,
    an I/O error): then there is nothing to undo, and the first error is the one to report."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass
