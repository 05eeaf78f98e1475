"""The command palette (ctrl+p): every action of the dashboard and every deck theme."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

from console.data import signal_info
from console.screens.actions import ACTION_TITLES, MUTATING
from console.widgets.loss_plot import AXIS_LABELS, SMOOTHING, SMOOTHING_WORDS


class DeckCommands(Provider):
    def entries(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        dashboard = app.dashboard  # type: ignore[attr-defined]
        entries: list[tuple[str, Callable[[], object], str]] = []
        for action, title in ACTION_TITLES.items():
            if action in MUTATING and dashboard.readonly:
                continue  # read-only: actions are hidden, not merely dimmed
            reason = dashboard.refusal(action)
            help_text = f"unavailable: {reason}" if reason else f"key: {key_for(dashboard, action)}"
            entries.append((title, partial(dashboard.palette_run, action), help_text))
        entries.append(("Fleet: hosts over ssh", dashboard.action_fleet, "key: F"))
        entries += loss_entries(dashboard)
        for name in app.deck_theme_names:  # type: ignore[attr-defined]
            entries.append((f"Theme: {name}", partial(app.use_theme, name), "switch theme"))  # type: ignore[attr-defined]
        entries.append(("Save current theme to deck.toml", app.save_theme, "[console] theme"))  # type: ignore[attr-defined]
        return entries

    async def discover(self) -> Hits:
        for title, command, help_text in self.entries():
            yield DiscoveryHit(title, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, command, help_text in self.entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), command, help=help_text)


def key_for(dashboard: Screen, action: str) -> str:
    """The key as the footer shows it: `/`, `?`, not `slash`, `question_mark`."""
    for binding in dashboard.BINDINGS:
        if isinstance(binding, Binding) and binding.action == action:
            return dashboard.app.get_key_display(binding)
    return "-"


def loss_entries(dashboard: Screen) -> list[tuple[str, Callable[[], object], str]]:
    """The Loss pane's views: each signal the shown job logged (alone or on the right axis),
    each smoothing, each x axis, and pinning a baseline run."""
    pane = dashboard.loss_pane()  # type: ignore[attr-defined]
    set_view = dashboard.loss_set  # type: ignore[attr-defined]
    entries: list[tuple[str, Callable[[], object], str]] = []
    for name in pane.series.signal_names:
        words = signal_info(name).words
        entries.append((f"Loss: show {words}", partial(set_view, signal=name), "key: m"))
        entries.append((f"Loss: add {words} on the right axis", partial(set_view, second=name),
                        "key: n"))
    if pane.view.second:
        entries.append(("Loss: one signal only", partial(set_view, second=None), "key: n"))
    for mode in SMOOTHING:
        entries.append((f"Loss: smoothing {SMOOTHING_WORDS[mode]}",
                        partial(set_view, smoothing=mode), "key: e"))
    for axis, words in AXIS_LABELS.items():
        entries.append((f"Loss: x axis {words}", partial(set_view, axis=axis), "key: w"))
    entries.append(("Loss: compare with another run (pin or unpin a baseline)",
                    dashboard.choose_baseline, "key: b"))  # type: ignore[attr-defined]
    return entries
