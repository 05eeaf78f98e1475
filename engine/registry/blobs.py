"""Content-addressed blob store: blobs/sha256/<2 hex>/<64 hex>.

A blob is written to a temp name in the same filesystem, fsynced, then renamed into place, so a
crash never leaves a partial blob under a real hash. Storing the same content twice is a no-op.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from engine.paths import DeckPaths

CHUNK_BYTES = 4 << 20


class BlobStore:
    def __init__(self, paths: DeckPaths) -> None:
        self.paths = paths

    def path_of(self, sha256: str) -> Path:
        return self.paths.blobs / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).exists()

    def put(self, source: Path) -> tuple[str, int]:
        """Copy source in, hashing as it streams; returns (sha256, size)."""
        if source.parent.parent == self.paths.blobs and self.verify(source.name):
            return source.name, source.stat().st_size  # already a verified blob of this store
        self.paths.blob_tmp.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        descriptor, temp_name = tempfile.mkstemp(dir=self.paths.blob_tmp, prefix="incoming-")
        try:
            with open(descriptor, "wb") as sink, source.open("rb") as origin:
                while chunk := origin.read(CHUNK_BYTES):
                    digest.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
                sink.flush()
                os.fsync(sink.fileno())
            sha256 = digest.hexdigest()
            final = self.path_of(sha256)
            if final.exists():
                os.unlink(temp_name)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(temp_name, 0o444)
                os.replace(temp_name, final)
                _fsync_directory(final.parent)
            return sha256, size
        except BaseException:
            if os.path.exists(temp_name):
                os.unlink(temp_name)
            raise

    def verify(self, sha256: str) -> bool:
        path = self.path_of(sha256)
        if not path.exists():
            return False
        return file_sha256(path) == sha256

    def link_into(self, sha256: str, destination: Path) -> None:
        """Hard-link a blob to destination (copy across filesystems)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.path_of(sha256), destination)
        except OSError:
            shutil.copyfile(self.path_of(sha256), destination)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


