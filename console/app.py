"""The console App: themes, the dashboard screen and the palette. Kept thin: panes render,
sources read (in thread workers), engine_calls act."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand

from console.palette import DeckCommands
from console.screens.dashboard import DashboardScreen
from console.sources import DataSource, EngineSource
from console.themes import (BUILTIN_THEME_DIR, VARIABLE_DEFAULTS, LoadedThemes, load_themes,
                            save_theme_choice)
from engine.deck import Deck
from engine.errors import BadInput


class ModeldeckApp(App[int]):
    CSS_PATH = Path(__file__).resolve().parent / "app.tcss"  # absolute: subclasses live elsewhere
    TITLE = "modeldeck"
    COMMANDS = App.COMMANDS | {DeckCommands}
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    def __init__(self, deck: Deck, source: DataSource | None = None, *, readonly: bool = False,
                 theme_name: str | None = None, refresh_s: float | None = None,
                 themes: LoadedThemes | None = None) -> None:
        self.deck = deck
        self.loaded_themes = themes if themes is not None else themes_for(deck)
        super().__init__()
        for theme in self.loaded_themes.themes:
            self.register_theme(theme)
        self.theme = pick_theme(self.loaded_themes, theme_name or deck.config.console.theme)
        self.keep_only_deck_themes()
        self.source = source if source is not None else EngineSource(deck)
        self.readonly = readonly
        self.refresh_s = refresh_s if refresh_s is not None else deck.config.console.refresh_s
        self.dashboard = self.make_dashboard(readonly)
        self.recorder = self.make_recorder()

    def make_dashboard(self, readonly: bool) -> DashboardScreen:
        if getattr(self.source, "playback", None) is not None:  # tui --replay: a recording
            from console.screens.replay_dashboard import ReplayDashboard

            return ReplayDashboard(self.source, self.refresh_s,  # type: ignore[arg-type]
                                   startup_warnings=self.loaded_themes.problems)
        return DashboardScreen(self.source, self.refresh_s, readonly,
                               startup_warnings=self.loaded_themes.problems)

    def make_recorder(self) -> Any:
        """deck.toml [console] record: the flight recorder, fed by this console's sampler
        (BadInput now, before the screen opens, for a file that is not a recording)."""
        path = self.deck.config.console.record
        latest = getattr(self.source, "telemetry_snapshot", None)
        if path is None or latest is None:
            return None
        from engine.actions.telemetry import RecorderThread

        path = Path(path).expanduser()
        return RecorderThread(self.deck, path if path.is_absolute() else self.deck.paths.home / path,
                              latest, self.deck.config.telemetry.interval_s)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(VARIABLE_DEFAULTS)

    @property
    def deck_theme_names(self) -> tuple[str, ...]:
        return self.loaded_themes.names

    def keep_only_deck_themes(self) -> None:
        """Textual's own themes lack the deck-* colours (`down` would lose its red): only the
        shipped themes and the user's theme_dir are offered, unless there are none at all."""
        if not self.loaded_themes.names:
            return
        for name in list(self.available_themes):
            if name not in self.loaded_themes.names and name != self.theme:
                self.unregister_theme(name)

    def get_system_commands(self, screen: Any) -> Iterable[SystemCommand]:
        """Textual's commands, less its theme picker (the palette lists `Theme: NAME` for the
        deck's themes)."""
        for command in super().get_system_commands(screen):
            if command.title != "Theme":
                yield command

    def on_mount(self) -> None:
        self.push_screen(self.dashboard)
        if self.recorder is not None:
            self.recorder.start()
            self.set_interval(5.0, self.check_recorder)

    def check_recorder(self) -> None:
        if self.recorder is not None and self.recorder.problem:
            self.dashboard.report("error", self.recorder.problem)
            self.recorder = None  # said once; the recording has stopped

    def on_unmount(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()
        close = getattr(self.source, "close", None)  # the sampler's threads and NVML
        if callable(close):
            close()

    def action_next_theme(self) -> None:
        names = self.deck_theme_names or (self.theme,)
        position = names.index(self.theme) if self.theme in names else -1
        self.use_theme(names[(position + 1) % len(names)])

    def use_theme(self, name: str) -> None:
        self.theme = name
        self.notify(f"theme: {name}", timeout=2)

    def save_theme(self) -> None:
        from engine.config import config_path

        path, _ = config_path(self.deck.config_file)
        try:
            save_theme_choice(path, self.theme)
        except (OSError, ValueError) as error:
            self.dashboard.report("error", f"cannot save theme to {path}: {error}")
            return
        self.dashboard.report("info", f"theme {self.theme} saved to {path}")


def themes_for(deck: Deck) -> LoadedThemes:
    directories = [BUILTIN_THEME_DIR]
    user_dir = deck.config.console.theme_dir
    if user_dir is not None:
        directories.append(Path(user_dir).expanduser())
    return load_themes(directories)


def pick_theme(themes: LoadedThemes, wanted: str) -> str:
    if wanted in themes.names:
        return wanted
    if wanted in ("textual-dark", "textual-light"):
        return wanted
    if not themes.names:  # no theme folder at all (an install without themes/): still usable
        return "textual-dark"
    known = ", ".join(themes.names) or "none"
    raise BadInput(f"unknown theme {wanted!r} (known: {known})")


def run_app(deck: Deck, readonly: bool, theme: str | None, replay: str | None = None) -> int:
    """`modeldeck` / `modeldeck tui`: BadInput (exit 2) for an unknown theme or a bad deck.toml;
    replay: a recording to show instead of the deck (BadInput if it is not one)."""
    source = None
    if replay is not None:
        from console.recording import open_replay

        source = open_replay(replay, deck)
    app = ModeldeckApp(deck, source, readonly=readonly or replay is not None, theme_name=theme)
    app.run()
    return app.return_code or 0
