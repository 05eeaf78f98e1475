"""Themes are TOML files (themes/ in the project, plus the user's [console] theme_dir).

A file holds one theme: `name`, `dark`, the Textual colours (primary, secondary, accent,
foreground, background, surface, panel, boost, warning, error, success) and an optional
[variables] table for the console's own variables (deck-good, deck-warn, deck-bad, deck-muted).
A broken file is reported once (as a problem string) and skipped.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme



def _builtin_theme_dir() -> Path:
    """themes/ of the source tree (a checkout, an editable install), else the copy a wheel
    installs under <prefix>/share/modeldeck/themes (pyproject's data-files)."""
    source_tree = Path(__file__).resolve().parent.parent / "themes"
    installed = Path(sys.prefix) / "share" / "modeldeck" / "themes"
    return source_tree if source_tree.is_dir() or not installed.is_dir() else installed


BUILTIN_THEME_DIR = _builtin_theme_dir()
COLOUR_KEYS = ("primary", "secondary", "accent", "foreground", "background", "surface", "panel",
               "boost", "warning", "error", "success")
ALLOWED_KEYS = {"name", "dark", "variables", *COLOUR_KEYS}
# The console's own theme variables; a theme file may override them.
VARIABLE_DEFAULTS = {"deck-good": "#4caf50", "deck-warn": "#e0a800", "deck-bad": "#e5484d",
                     "deck-muted": "#6c7086"}


@dataclass(frozen=True)
class LoadedThemes:
    themes: tuple[Theme, ...]
    problems: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(theme.name for theme in self.themes)


def load_themes(directories: list[Path]) -> LoadedThemes:
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    for directory in directories:
        if not directory.is_dir():
            problems.append(f"theme folder {directory} does not exist")
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = theme_from_file(path)
            except ValueError as error:
                problems.append(f"theme {path.name} skipped: {error}")
                continue
            themes[theme.name] = theme  # a user theme may replace a shipped one of the same name
    return LoadedThemes(tuple(themes.values()), tuple(problems))


def theme_from_file(path: Path) -> Theme:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"not valid TOML: {error}") from None
    unknown = sorted(set(raw) - ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
        raise ValueError("'name' must be a short name of letters, digits, '-' or '_'")
    if "primary" not in raw:
        raise ValueError("'primary' colour is required")
    # Any: Theme's keywords mix colours with numbers and flags; only colours are passed here
    colours: dict[str, Any] = {key: check_colour(key, raw[key]) for key in COLOUR_KEYS if key in raw}
    variables = raw.get("variables", {})
    if not isinstance(variables, dict):
        raise ValueError("[variables] must be a table")
    checked = {str(key): check_colour(f"variables.{key}", value) for key, value in variables.items()}
    dark = raw.get("dark", True)
    if not isinstance(dark, bool):
        raise ValueError("'dark' must be true or false")
    return Theme(name=name, dark=dark, variables=checked, **colours)


def check_colour(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a colour string")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ValueError(f"{key!r}: {value!r} is not a colour") from None
    return value


def save_theme_choice(config_file: Path, theme_name: str) -> None:
    """Set [console] theme in deck.toml, keeping the rest of the file as the user wrote it.

    tomlkit edits the parsed document, so comments, order and formatting survive (a regular
    expression once wrote a second [console] table when the header carried a comment); the file
    is replaced atomically, so a crash leaves the old file or the new one.
    """
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    from engine.fsutil import write_atomically

    text = config_file.read_text() if config_file.exists() else ""
    try:
        document = tomlkit.parse(text)
    except TOMLKitError as error:
        raise ValueError(f"{config_file} is not valid TOML ({error}); theme not saved") from None
    console = document.get("console")
    if console is None:
        console = tomlkit.table()
        document["console"] = console
    elif not isinstance(console, dict):
        raise ValueError(f"{config_file}: 'console' is not a table; theme not saved")
    console["theme"] = theme_name
    config_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(config_file, tomlkit.dumps(document))
