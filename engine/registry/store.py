"""The versioned model store: versions, files, aliases, deployments, history and audit.

Writers use BEGIN IMMEDIATE transactions, so two processes deploying at once serialize and a
kill at any instant leaves either the old or the new state (SQLite's WAL guarantees the rest).

A deck home that cannot be written (a read-only mount) is opened read-only: every read works,
every write fails with one line. A disk fault (ENOSPC, EIO, "database or disk is full") leaves the
registry as it was and surfaces as ActionFailed naming the path: `_storage_errors` is the one
place where OSError and SQLite's errors become that line.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import ActionFailed, BadInput
from engine.fsutil import building_directory
from engine.paths import DeckPaths, deck_paths
from engine.registry.blobs import BlobStore
from engine.registry.db import connect, connect_read_only, transaction
from engine.registry.inspect import SourceDescription
from engine.registry.records import (AuditEntry, Deployment, FileEntry, HistoryEntry, ModelRef,
                                     VersionInfo, check_name)
from engine.testhooks import pause_point
from engine.validate import inside, safe_relative_name

FULL_DISK_BYTES = 1 << 20
KINDS = ("model", "adapter")
WEIGHT_FORMATS = ("safetensors", "gguf", "pickle")
Method = TypeVar("Method", bound=Callable[..., Any])


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _storage_errors(method: Method) -> Method:
    """OSError and SQLite's errors leave the registry as ActionFailed: one line naming the path
    and the reason (no traceback). The transaction already rolled back, so nothing changed."""
    @functools.wraps(method)
    def wrapper(self: "Registry", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OSError, sqlite3.DatabaseError) as error:
            if isinstance(error, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
                raise  # a bug of ours, not a fault of the disk
            raise ActionFailed(_fault_text(error, self.paths)) from None
    return wrapper  # type: ignore[return-value]


def _fault_text(error: OSError | sqlite3.Error, paths: DeckPaths) -> str:
    """'PATH: reason', plus a word on free space when the disk is full (SQLite often says only
    'disk I/O error' then)."""
    if isinstance(error, OSError):
        text = f"{error.filename or paths.home}: {error.strerror or error}"
    else:
        text = f"registry database {paths.registry_db}: {error}"
    try:
        said_full = "space" in text or "full" in text
        if not said_full and shutil.disk_usage(paths.home).free < FULL_DISK_BYTES:
            text += " (the disk holding the deck home is full)"
    except OSError:
        pass
    return text


def _map_storage_errors(cls: type) -> type:
    """Apply _storage_errors to every public method and property of the class."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_") or isinstance(member, (staticmethod, classmethod)):
            continue
        if isinstance(member, property):
            setattr(cls, name, property(_storage_errors(member.fget)))  # type: ignore[type-var]
        elif callable(member):
            setattr(cls, name, _storage_errors(member))
    return cls


def check_file_name(name: str) -> str:
    """A version's file name: one plain name (the materialized directory is flat), never an
    absolute path or '..'. Checked when a version is registered and again when it is linked."""
    safe_relative_name("file name", name)
    if "/" in name:
        raise BadInput(f"file name {name[:60]!r} must be a plain file name, without '/'")
    return name


@_map_storage_errors
class Registry:
    def __init__(self, paths: DeckPaths | None = None) -> None:
        self.paths = paths or deck_paths()
        self.blobs = BlobStore(self.paths)
        self._connection: sqlite3.Connection | None = None
        self.read_only = False
        self.read_only_reason: str | None = None  # why, when read_only

    @property
    def db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def _open(self) -> sqlite3.Connection:
        """Read-write when the home can be written (creating it if needed), else read-only:
        reads on a read-only mount create nothing and chmod nothing."""
        self.paths.check_home()
        if self.paths.writable():
            try:
                self.paths.ensure()
                return connect(self.paths.registry_db)
            except (OSError, sqlite3.OperationalError) as error:
                # A full disk cannot even hold WAL's shared-memory file: reads still work
                # through a read-only connection, and writes say why they cannot.
                if not self.paths.registry_db.is_file():
                    raise
                self.read_only_reason = _fault_text(error, self.paths)
        self.read_only = True
        return connect_read_only(self.paths.registry_db)

    def _require_writable(self, what: str) -> None:
        self.db  # opening decides read_only
        if not self.read_only:
            return
        if self.read_only_reason is None:
            raise ActionFailed(f"deck home {self.paths.home} is read-only: cannot {what}")
        raise ActionFailed(f"cannot {what}: the registry opens read-only ({self.read_only_reason})")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ---- reading -------------------------------------------------------------------------

    def resolve(self, reference: str | ModelRef) -> VersionInfo:
        """NAME, NAME@VERSION or NAME@ALIAS -> the version; BadInput when it does not exist."""
        ref = reference if isinstance(reference, ModelRef) else ModelRef.parse(reference)
        version = self._resolve_number(ref)
        row = self.db.execute("SELECT * FROM versions WHERE model=? AND version=?",
                              (ref.model, version)).fetchone()
        if row is None:
            raise BadInput(f"model {ref} does not exist")
        return self._version_from_row(row, with_files=True)

    def _resolve_number(self, ref: ModelRef) -> int:
        if ref.selector is None or ref.selector == "latest":
            row = self.db.execute("SELECT MAX(version) FROM versions WHERE model=?",
                                  (ref.model,)).fetchone()
            if row[0] is None:
                raise BadInput(f"model {ref.model!r} does not exist")
            return int(row[0])
        if ref.version_number is not None:
            return ref.version_number
        row = self.db.execute("SELECT version FROM aliases WHERE model=? AND alias=?",
                              (ref.model, ref.selector)).fetchone()
        if row is None:
            raise BadInput(f"model {ref} does not exist (no version {ref.selector!r} "
                           f"and no alias of that name)")
        return int(row[0])

    def versions(self, model: str | None = None) -> list[VersionInfo]:
        query = "SELECT * FROM versions" + (" WHERE model=?" if model else "")
        rows = self.db.execute(query + " ORDER BY model, version", (model,) if model else ())
        return [self._version_from_row(row) for row in rows.fetchall()]

    def counts(self) -> tuple[int, int]:
        """(models, versions)."""
        row = self.db.execute("SELECT COUNT(DISTINCT model), COUNT(*) FROM versions").fetchone()
        return int(row[0]), int(row[1])

    def model_names(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT model FROM versions ORDER BY model")]

    def _version_from_row(self, row: sqlite3.Row, with_files: bool = False) -> VersionInfo:
        aliases = tuple(r[0] for r in self.db.execute(
            "SELECT alias FROM aliases WHERE model=? AND version=? ORDER BY alias",
            (row["model"], row["version"])))
        files: tuple[FileEntry, ...] = ()
        if with_files:
            files = tuple(FileEntry(r["name"], r["sha256"], r["size_bytes"]) for r in self.db.execute(
                "SELECT name, sha256, size_bytes FROM files WHERE model=? AND version=? ORDER BY name",
                (row["model"], row["version"])))
        return VersionInfo.from_row(row, aliases, files)

    def deployment(self, target: str) -> Deployment | None:
        row = self.db.execute("SELECT * FROM deployments WHERE target=?", (target,)).fetchone()
        return Deployment(**dict(row)) if row else None

    def deployments(self) -> list[Deployment]:
        rows = self.db.execute("SELECT * FROM deployments ORDER BY target").fetchall()
        return [Deployment(**dict(row)) for row in rows]

    def history(self, target: str | None = None, limit: int = 100) -> list[HistoryEntry]:
        query = "SELECT * FROM history" + (" WHERE target=?" if target else "")
        args: tuple = (target,) if target else ()
        rows = self.db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [HistoryEntry(**dict(row)) for row in rows]

    def history_entry(self, history_id: int) -> HistoryEntry | None:
        row = self.db.execute("SELECT * FROM history WHERE id=?", (history_id,)).fetchone()
        return HistoryEntry(**dict(row)) if row else None

    def recorded_entry(self, history_id: int) -> HistoryEntry:
        """A history entry this deck wrote (history rows are never deleted)."""
        entry = self.history_entry(history_id)
        if entry is None:
            raise ActionFailed(f"history entry {history_id} is missing from {self.paths.registry_db}")
        return entry

    def audit(self, limit: int = 100, verb: str | None = None) -> list[AuditEntry]:
        """Newest first. A pointer move is written when the move happens, before its gate has
        answered: its result is the history row's outcome as it stands now (pending, then ok
        or failed), so every reader, CLI and console, sees the same word."""
        query = ("SELECT audit.id, audit.at, audit.user, audit.verb, audit.arguments,"
                 " COALESCE(history.outcome, audit.result) AS result, audit.detail, audit.reason,"
                 " audit.history_id FROM audit LEFT JOIN history ON history.id = audit.history_id"
                 + (" WHERE audit.verb=?" if verb else ""))
        args: tuple = (verb,) if verb else ()
        rows = self.db.execute(query + " ORDER BY audit.id DESC LIMIT ?", (*args, limit)).fetchall()
        return [AuditEntry.from_row(row) for row in rows]

    # ---- writing -------------------------------------------------------------------------

    def register(self, model: str, description: SourceDescription, *, produced_by: str,
                 source: str | None, parent_version: int | None = None,
                 metrics: dict[str, Any] | None = None, lineage: dict[str, Any] | None = None,
                 status: str = "ready", audit_verb: str | None = None,
                 audit_arguments: dict[str, Any] | None = None) -> VersionInfo:
        """Store the files (outside the transaction), then add the version in one transaction.
        Everything is checked first (names come from pushes too): a bad one writes nothing."""
        check_name("model name", model)
        _check_description(description)
        self._require_writable(f"register {model}")
        stored = [(name, *self.blobs.put(path)) for name, path in description.files]
        pause_point("import:after-blobs")
        with transaction(self.db):
            row = self.db.execute("SELECT MAX(version) FROM versions WHERE model=?", (model,)).fetchone()
            version = (row[0] or 0) + 1
            self.db.execute(
                "INSERT INTO versions (model, version, created_at, produced_by, source, parent_version,"
                " kind, weight_format, architecture, param_count, size_bytes, status, metrics, lineage)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (model, version, time.time(), produced_by, source, parent_version, description.kind,
                 description.weight_format, description.architecture, description.param_count,
                 sum(size for _, _, size in stored), status, json.dumps(metrics or {}),
                 json.dumps({**({"base_model": description.base_model} if description.base_model else {}),
                             **(lineage or {})})))
            self.db.executemany(
                "INSERT INTO files (model, version, name, sha256, size_bytes) VALUES (?,?,?,?,?)",
                [(model, version, name, sha256, size) for name, sha256, size in stored])
            if audit_verb:
                self._append_audit(audit_verb, {**(audit_arguments or {}), "version": version}, "ok")
        return self.resolve(ModelRef(model, str(version)))

    def set_alias(self, target_version: VersionInfo, alias: str) -> None:
        check_name("alias", alias)
        if alias.isdigit() or alias == "latest":
            raise BadInput(f"invalid alias {alias!r}: it would shadow a version selector")
        self._require_writable(f"set alias {alias}")
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO aliases (model, alias, version, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT(model, alias) DO UPDATE SET version=excluded.version,"
                " updated_at=excluded.updated_at",
                (target_version.model, alias, target_version.version, time.time()))
            self._append_audit("alias", {"ref": target_version.ref, "alias": alias}, "ok")

    def update_metrics(self, model: str, version: int, metrics: dict[str, Any]) -> None:
        self._require_writable(f"update {model}@{version}")
        with transaction(self.db):
            row = self.db.execute("SELECT metrics FROM versions WHERE model=? AND version=?",
                                  (model, version)).fetchone()
            if row is None:
                raise BadInput(f"model {model}@{version} does not exist")
            merged = {**json.loads(row[0]), **metrics}
            self.db.execute("UPDATE versions SET metrics=? WHERE model=? AND version=?",
                            (json.dumps(merged), model, version))

    def move_pointer(self, target: str, chosen: VersionInfo, *, action: str, reason: str | None,
                     arguments: dict[str, Any], state: str = "active") -> HistoryEntry:
        """Deploy or roll back: pointer, history and audit change in one transaction."""
        self._require_writable(f"{action} {target}")
        with transaction(self.db):
            pause_point("deploy:begin")
            previous = self.deployment(target)
            now = time.time()
            cursor = self.db.execute(
                "INSERT INTO history (target, at, action, model, version, previous_model,"
                " previous_version, user, reason, outcome) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (target, now, action, chosen.model, chosen.version,
                 previous.model if previous else None, previous.version if previous else None,
                 current_user(), reason, "ok" if state == "active" else state))
            assert cursor.lastrowid is not None  # an INSERT always sets it
            history_id = cursor.lastrowid
            pause_point("deploy:after-history")
            self.db.execute(
                "INSERT INTO deployments (target, model, version, state, updated_at, history_id)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(target) DO UPDATE SET model=excluded.model,"
                " version=excluded.version, state=excluded.state, updated_at=excluded.updated_at,"
                " history_id=excluded.history_id",
                (target, chosen.model, chosen.version, state, now, history_id))
            pause_point("deploy:after-pointer")
            self._append_audit(action, arguments, "ok", reason=reason, history_id=history_id)
            pause_point("deploy:before-commit")
        pause_point("deploy:after-commit")
        return self.recorded_entry(history_id)

    def record_rollout(self, target: str, chosen: VersionInfo, *, outcome: str, reason: str,
                       arguments: dict[str, Any], detail: str, move: bool) -> HistoryEntry:
        """A rollout's end in one transaction: a history row (action `rollout`), the pointer
        moved to `chosen` when it was promoted (move), and an audit row whose detail holds the
        steps and gate numbers. A failed, aborted or interrupted rollout moves nothing."""
        self._require_writable(f"rollout {target}")
        with transaction(self.db):
            previous = self.deployment(target)
            now = time.time()
            cursor = self.db.execute(
                "INSERT INTO history (target, at, action, model, version, previous_model,"
                " previous_version, user, reason, outcome) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (target, now, "rollout", chosen.model, chosen.version,
                 previous.model if previous else None, previous.version if previous else None,
                 current_user(), reason, outcome))
            assert cursor.lastrowid is not None  # an INSERT always sets it
            if move:
                self.db.execute(
                    "INSERT INTO deployments (target, model, version, state, updated_at, history_id)"
                    " VALUES (?,?,?,'active',?,?) ON CONFLICT(target) DO UPDATE SET"
                    " model=excluded.model, version=excluded.version, state=excluded.state,"
                    " updated_at=excluded.updated_at, history_id=excluded.history_id",
                    (target, chosen.model, chosen.version, now, cursor.lastrowid))
            self._append_audit("rollout", arguments, outcome, detail=detail, reason=reason,
                               history_id=cursor.lastrowid)
        return self.recorded_entry(cursor.lastrowid)

    def set_outcome(self, target: str, history_id: int, outcome: str, state: str) -> None:
        """Settle a pending deployment (used by the serving gate and remote targets)."""
        self._require_writable(f"record the outcome on {target}")
        with transaction(self.db):
            self.db.execute("UPDATE history SET outcome=? WHERE id=?", (outcome, history_id))
            self.db.execute("UPDATE deployments SET state=?, updated_at=? WHERE target=? AND history_id=?",
                            (state, time.time(), target, history_id))

    def append_audit(self, verb: str, arguments: dict[str, Any], result: str,
                     detail: str | None = None, reason: str | None = None) -> None:
        self._require_writable(f"record {verb} in the audit log")
        with transaction(self.db):
            self._append_audit(verb, arguments, result, detail=detail, reason=reason)

    def _append_audit(self, verb: str, arguments: dict[str, Any], result: str, *,
                      detail: str | None = None, reason: str | None = None,
                      history_id: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO audit (at, user, verb, arguments, result, detail, reason, history_id)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (time.time(), current_user(), verb, json.dumps(arguments, default=str), result, detail,
             reason, history_id))

    # ---- files ---------------------------------------------------------------------------

    def materialize(self, version: VersionInfo, verify: bool = True) -> Path:
        """A directory of the version's files (hard links into blobs/), each hash-checked."""
        if not version.files:
            version = self.resolve(version.ref)
        names = _checked_names(version)
        destination = self.paths.materialized / check_name("model name", version.model) \
            / str(int(version.version))
        for entry in version.files:
            if verify and not self.blobs.verify(entry.sha256):
                raise BadInput(f"{version.ref}: blob for {entry.name} is missing or corrupt "
                               f"(sha256 {entry.sha256[:12]}...)")
        if destination.exists() and self._matches(destination, version):
            return destination
        with building_directory(destination, lambda built: self._matches(built, version),
                                prefix=".materialize-") as staging:
            for entry, name in zip(version.files, names):
                self.blobs.link_into(entry.sha256, inside(staging, name))
        return destination

    @staticmethod
    def _matches(directory: Path, version: VersionInfo) -> bool:
        present = {p.name: p.stat().st_size for p in directory.iterdir()}
        return present == {entry.name: entry.size_bytes for entry in version.files}

    def verify_all(self) -> list[str]:
        """Every referenced blob whose content no longer matches its hash."""
        rows = self.db.execute("SELECT DISTINCT sha256 FROM files").fetchall()
        return [row[0] for row in rows if not self.blobs.verify(row[0])]


def _check_description(description: SourceDescription) -> None:
    seen: set[str] = set()
    for name, _ in description.files:
        check_file_name(name)
        if name in seen:
            raise BadInput(f"file name {name!r} appears twice")
        seen.add(name)
    if description.kind not in KINDS:
        raise BadInput(f"kind must be one of {', '.join(KINDS)}, not {str(description.kind)[:40]!r}")
    if description.weight_format not in WEIGHT_FORMATS:
        raise BadInput(f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, "
                       f"not {str(description.weight_format)[:40]!r}")


def _checked_names(version: VersionInfo) -> list[str]:
    """The file names of a stored version, refused if the catalogue holds one that would land
    outside the version's directory (a row written by an older release, or forged)."""
    try:
        return [check_file_name(entry.name) for entry in version.files]
    except BadInput as error:
        raise ActionFailed(f"{version.ref}: refusing to materialize: {error}") from None
