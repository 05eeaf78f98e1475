"""Versioned model store: content-addressed blobs plus a SQLite catalogue."""

from engine.registry.records import (AuditEntry, Deployment, FileEntry, HistoryEntry, ModelRef,
                                     VersionInfo)
from engine.registry.store import Registry, current_user

__all__ = ["AuditEntry", "Deployment", "FileEntry", "HistoryEntry", "ModelRef", "Registry",
           "VersionInfo", "current_user"]
