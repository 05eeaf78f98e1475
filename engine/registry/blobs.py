"""Content-addressed blob store: blobs/sha256/<2 hex>/<64 hex>.

A blob is written to a temp name in the same filesystem, fsynced, then renamed into place, so a
crash never leaves a partial blob under a real hash. Storing the same content twice is a no-op.

A temp file is named `incoming-<pid>-<random>` and its writer holds an exclusive lock on it, so
a killed writer's leftovers are recognisable: the next writer removes every temp whose lock is
free and whose process is gone, and never touches a live writer's file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from engine.errors import BadInput
from engine.validate import SHA256_PATTERN
from engine.paths import DeckPaths
from engine.procs import process_alive
from engine.testhooks import pause_point

CHUNK_BYTES = 4 << 20
TEMP_PREFIX = "incoming-"
TEMP_PATTERN = re.compile(r"^incoming-(\d+)-[0-9a-f]+$")
# Temps from before writers recorded their pid: a live writer appends every few milliseconds,
# so one untouched this long has no writer.
LEGACY_TEMP_AGE_S = 3600.0


class BlobStore:
    def __init__(self, paths: DeckPaths) -> None:
        self.paths = paths
        self._swept = False

    def path_of(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not SHA256_PATTERN.match(sha256):
            raise BadInput(f"not a sha256 digest: {str(sha256)[:80]!r}")
        return self.paths.blobs / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).exists()

    def put(self, source: Path) -> tuple[str, int]:
        """Copy source in, hashing as it streams; returns (sha256, size)."""
        if source.parent.parent == self.paths.blobs and self.verify(source.name):
            return source.name, source.stat().st_size  # already a verified blob of this store
        self.paths.blob_tmp.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            self.sweep_stale_temps()
        origin = open_regular_file(source)
        temp = self.paths.blob_tmp / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with os.fdopen(origin, "rb") as reader, open(temp, "xb") as sink:
                fcntl.flock(sink.fileno(), fcntl.LOCK_EX)  # held until we close or die
                sha256, size = _copy_hashing(reader, sink)
            final = self.path_of(sha256)
            if final.exists():
                os.unlink(temp)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(temp, 0o444)
                os.replace(temp, final)
                _fsync_directory(final.parent)
            return sha256, size
        except BaseException as error:
            temp.unlink(missing_ok=True)
            if isinstance(error, OSError) and error.filename is None:
                error.filename = str(temp)  # a failed write() names no file: say which
            raise

    def sweep_stale_temps(self) -> list[Path]:
        """Remove the temps that killed writers left; returns what was removed."""
        self._swept = True
        removed: list[Path] = []
        try:
            candidates = list(self.paths.blob_tmp.glob(f"{TEMP_PREFIX}*"))
        except OSError:
            return removed
        for temp in candidates:
            if _is_stale(temp):
                temp.unlink(missing_ok=True)
                removed.append(temp)
        return removed

    def verify(self, sha256: str) -> bool:
        path = self.path_of(sha256)
        if not path.is_file():
            return False
        return file_sha256(path) == sha256

    def link_into(self, sha256: str, destination: Path) -> None:
        """Hard-link a blob to a new file `destination` (a copy where links are impossible).
        Never replaces or writes through an existing file or link."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.path_of(sha256), destination, follow_symlinks=False)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            with self.path_of(sha256).open("rb") as origin, open(destination, "xb") as sink:
                shutil.copyfileobj(origin, sink, CHUNK_BYTES)


def _copy_hashing(reader: BinaryIO, sink: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := reader.read(CHUNK_BYTES):
        digest.update(chunk)
        sink.write(chunk)
        size += len(chunk)
        pause_point("blobs:writing")
    sink.flush()
    os.fsync(sink.fileno())
    return digest.hexdigest(), size


def open_regular_file(path: Path) -> int:
    """A read descriptor for `path`, refused (BadInput) unless it is a regular file. Opened
    non-blocking so a FIFO cannot hang us; checked on the descriptor, so a file swapped for a
    FIFO or device after it was inspected is caught too."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise BadInput(f"{path} is {describe_mode(mode)}, not a regular file: refusing to read it")
    os.set_blocking(descriptor, True)
    return descriptor


def describe_mode(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _is_stale(temp: Path) -> bool:
    """A temp nobody writes: its lock is free and its writer process is gone."""
    match = TEMP_PATTERN.match(temp.name)
    if match is None:
        try:
            return time.time() - temp.stat().st_mtime > LEGACY_TEMP_AGE_S
        except OSError:
            return False
    pid = int(match.group(1))
    if pid == os.getpid() or process_alive(pid):
        return False  # ours (another thread), or a writer still running
    try:
        descriptor = os.open(temp, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a writer in another pid namespace holds it
    finally:
        os.close(descriptor)
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with os.fdopen(open_regular_file(path), "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
