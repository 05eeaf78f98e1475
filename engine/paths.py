"""Where the deck's state lives on disk (see DESIGN.md, 'On disk')."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BadInput
from engine.validate import parse_job_id



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

    @property
    def rollout_state(self) -> Path:
        """The local server's current (or last) rollout, rewritten whole at every change."""
        return self.run / "rollout.json"

    def job(self, job_id: str) -> Path:
        """jobs/<job_id>, refused (BadInput) unless the id is one new_job_id could have made."""
        return self.jobs / parse_job_id(job_id)

    def check_home(self) -> "DeckPaths":
        """BadInput (one line) when the home exists but is not a directory we can read."""
        try:
            exists, is_dir = self.home.exists(), self.home.is_dir()
        except OSError as error:
            raise BadInput(f"deck home {self.home} is not readable: {error.strerror} "
                           "(check MODELDECK_HOME)") from None
        if exists and not is_dir:
            raise BadInput(f"deck home {self.home} is not a directory (check MODELDECK_HOME)")
        if is_dir and not os.access(self.home, os.R_OK | os.X_OK):
            raise BadInput(f"deck home {self.home} is not readable (check MODELDECK_HOME "
                           "and its permissions)")
        return self

    def writable(self) -> bool:
        """Whether state can be written here: the home (or the directory that would hold it)
        accepts writes, and so does registry.db. False on a read-only mount."""
        existing = self.home
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            return False
        database = self.registry_db
        return not database.exists() or os.access(database, os.W_OK)

    def ensure(self) -> "DeckPaths":
        self.check_home()
        for directory in (self.home, self.blobs, self.blob_tmp, self.jobs, self.run):
            directory.mkdir(parents=True, exist_ok=True)
        if self.run.stat().st_mode & 0o777 != 0o700:  # chmod only when needed: no write to read
            os.chmod(self.run, 0o700)
        return self


def deck_home() -> Path:
    """`$MODELDECK_HOME`, else `~/.modeldeck`."""
    configured = os.environ.get("MODELDECK_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".modeldeck"


def deck_paths(home: Path | None = None) -> DeckPaths:
    return DeckPaths(Path(home) if home is not None else deck_home())


CONFIG_ENV_PREFIX = "MODELDECK_"
# deck.toml's single-table sections, whose scalars `MODELDECK_<SECTION>_<KEY>` overrides
# (engine.config; tests/registry/test_config.py keeps this list equal to DeckConfig's).
OVERRIDABLE_SECTIONS = ("serve", "prometheus", "telemetry", "console", "finetune", "compress",
                        "rollout")


def config_path(explicit: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The deck.toml to read and whether the user named it (a named file must exist)."""
    if explicit is not None:
        if not str(explicit).strip():
            raise BadInput("--config needs a file name, not an empty string")
        return Path(explicit).expanduser(), True
    if os.environ.get("MODELDECK_CONFIG"):
        return Path(os.environ["MODELDECK_CONFIG"]).expanduser(), True
    return deck_home() / "deck.toml", False


def settings_given(explicit: str | os.PathLike | None = None) -> bool:
    """Whether anything sets the deck's settings: a deck.toml (named or in the home; one that
    cannot even be looked at counts, so that loading it reports why) or an override variable.
    When nothing does, the settings are the defaults and there is nothing to validate."""
    path, named = config_path(explicit)
    if named:
        return True
    try:
        if path.exists():
            return True
    except (OSError, ValueError):
        return True
    prefixes = tuple(f"{CONFIG_ENV_PREFIX}{section}_".upper() for section in OVERRIDABLE_SECTIONS)
    return any(name.startswith(prefixes) for name in os.environ)
