"""Where the deck's state lives on disk (see DESIGN.md, 'On disk')."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DeckPaths:
    home: Path

    @property
    def registry_db(self) -> Path:
        return self.home / "registry.db"

    @property
    def blobs(self) -> Path:
        return self.home / "blobs" / "sha256"

    @property
    def blob_tmp(self) -> Path:
        # Same filesystem as blobs/, so the final rename is atomic.
        return self.home / "blobs" / "tmp"

    @property
    def materialized(self) -> Path:
        """Per-version directories of hard links into blobs/, what loaders read."""
        return self.home / "models"

    @property
    def jobs(self) -> Path:
        return self.home / "jobs"

    @property
    def run(self) -> Path:
        return self.home / "run"

    def ensure(self) -> "DeckPaths":
        for directory in (self.home, self.blobs, self.blob_tmp, self.jobs, self.run):
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run, 0o700)
        return self


def deck_home() -> Path:
    """`$MODELDECK_HOME`, else `~/.modeldeck`."""
    configured = os.environ.get("MODELDECK_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".modeldeck"


def deck_paths(home: Path | None = None) -> DeckPaths:
    return DeckPaths(Path(home) if home is not None else deck_home())
