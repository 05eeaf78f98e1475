"""Directories that appear whole or not at all, even with several processes building them."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def building_directory(destination: Path, is_complete: Callable[[Path], bool],
                       prefix: str = ".build-") -> Iterator[Path]:
    """Yield an empty staging directory beside `destination`; when the block succeeds, publish
    it with one rename. Readers never see a half-built directory, a crash leaves only a stray
    staging folder, and when another process published a complete one first, theirs is kept
    (it holds the same content, and someone may be reading it)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=prefix))
    try:
        yield staging
        _publish(staging, destination, is_complete)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, destination: Path, is_complete: Callable[[Path], bool]) -> None:
    if destination.exists():
        if is_complete(destination):
            return
        stale = destination.with_name(f".stale-{destination.name}-{uuid.uuid4().hex[:8]}")
        os.replace(destination, stale)  # out of the way in one step, then removed at leisure
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(staging, destination)
    except OSError:
        if not (destination.exists() and is_complete(destination)):
            raise  # not a lost race to an identical build: a real failure


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: a reader, or a kill at any instant, sees the
    old content or the new, never a truncated file. The temporary's name is unique to this
    call, not to the process: two threads rewriting one file (a server's request handler and its
    rollout thread) must not rename each other's temporary away."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as temporary:
            temporary.write(text)
        os.chmod(name, _mode_of(path))  # mkstemp makes it 0600
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _mode_of(path: Path) -> int:
    """The mode the file has now (a deck.toml a user made private stays so), else rw-r--r--."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o644
