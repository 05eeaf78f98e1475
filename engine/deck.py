"""The context every action runs in: where the deck lives and which deck.toml applies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.paths import DeckPaths, deck_paths

if TYPE_CHECKING:  # loaded when first used: `import engine` stays light
    from engine.config import DeckConfig
    from engine.registry import Registry


@dataclass
class Deck:
    paths: DeckPaths = field(default_factory=deck_paths)
    config_file: str | None = None
    _config: "DeckConfig | None" = None
    _registry: "Registry | None" = None

    @classmethod
    def at(cls, home: str | Path, config_file: str | None = None) -> "Deck":
        return cls(deck_paths(Path(home)), config_file)

    @property
    def config(self) -> "DeckConfig":
        if self._config is None:
            from engine.config import load_config

            self._config = load_config(self.config_file)
        return self._config

    def check_config(self) -> None:
        """BadInput for a broken deck.toml or override variable: every verb calls this first.
        With no deck.toml and no override set the settings are the defaults, valid by
        construction (tests/registry/test_config.py builds them), so pydantic and the settings classes,
        most of a quick verb's start-up, are not even imported."""
        from engine.paths import settings_given

        if self._config is None and settings_given(self.config_file):
            self.config

    @property
    def registry(self) -> "Registry":
        if self._registry is None:
            from engine.registry import Registry

            self._registry = Registry(self.paths)
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None
