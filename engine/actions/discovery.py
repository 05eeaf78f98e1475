"""`endpoints discover`: the serving engines running on this box, as deck.toml entries.

With `add`, the ones deck.toml does not have yet are appended to it as `[[endpoints]]` tables,
with tomlkit so the user's comments and layout stay as they were. The new file is validated as a
whole before it replaces the old one: on any error nothing is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.errors import ActionFailed, BadInput


@dataclass(frozen=True)
class DiscoverRequest:
    add: bool = False  # append the engines deck.toml lacks to it


@dataclass(frozen=True)
class DiscoveryResult:
    engines: tuple[Any, ...]  # engine.remote.discover.Discovered
    entries: tuple[dict[str, Any], ...]  # [[endpoints]] tables for the ones not configured
    added: bool  # entries were written to config_file
    config_file: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"engines": [engine.to_dict() for engine in self.engines],
                "entries": [dict(entry) for entry in self.entries], "added": self.added,
                "config_file": self.config_file}


def discover_endpoints(deck: Deck, request: DiscoverRequest) -> DiscoveryResult:
    """Find engines on this box (read-only unless request.add)."""
    from engine.paths import config_path
    from engine.remote.discover import discover

    configured = [(endpoint.name, endpoint.url) for endpoint in deck.config.endpoints]
    engines = discover(configured, own_pid=os.getpid())
    entries = tuple(endpoint_entries([e for e in engines if not e.configured],
                                     {name for name, _ in configured}))
    path = Path(deck.config_file) if deck.config_file else config_path()[0]
    if request.add and entries:
        append_endpoints(path, entries)
    return DiscoveryResult(engines, entries, bool(request.add and entries), str(path))


def endpoint_entries(engines: list[Any], taken: set[str]) -> list[dict[str, Any]]:
    """One `[[endpoints]]` table per engine, named `<engine>-<port>` (unique in the deck)."""
    entries = []
    names = set(taken)
    for engine in engines:
        name = base = engine.suggested_name
        number = 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.add(name)
        entries.append({"name": name, "kind": engine.kind, "url": engine.url})
    return entries


def append_endpoints(path: Path, entries: tuple[dict[str, Any], ...]) -> None:
    """Append the entries to deck.toml, keeping everything already there as written."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    from engine.config import load_config
    from engine.fsutil import write_atomically

    try:
        text = path.read_text() if path.exists() else ""
        document = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError, TOMLKitError) as error:
        raise BadInput(f"cannot update {path}: {error}") from None
    tables = document.get("endpoints")
    if tables is None:
        tables = tomlkit.aot()
        document.append("endpoints", tables)
    elif not isinstance(tables, tomlkit.items.AoT):
        raise BadInput(f"cannot update {path}: `endpoints` is not an array of [[endpoints]] tables")
    for entry in entries:
        table = tomlkit.table()
        table.add(tomlkit.comment("found by `modeldeck endpoints discover`"))
        for key, value in entry.items():
            table.add(key, value)
        tables.append(table)
    new_text = tomlkit.dumps(document)
    _validate(path, new_text, load_config)
    try:
        write_atomically(path, new_text)
    except OSError as error:
        raise ActionFailed(f"cannot write {path}: {error.strerror or error}") from None


def _validate(path: Path, text: str, load_config: Any) -> None:
    """The new deck.toml must load as the old one did (checked on a copy beside it)."""
    probe = path.with_name(f".{path.name}.{os.getpid()}.check")
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(text)
        load_config(probe)
    except BadInput as error:  # named after the file the user has, not the copy
        raise BadInput(f"adding the endpoints would break {path}: "
                       f"{str(error).replace(str(probe), str(path))}") from None
    except OSError as error:
        raise ActionFailed(f"cannot write beside {path}: {error.strerror or error}") from None
    finally:
        probe.unlink(missing_ok=True)
