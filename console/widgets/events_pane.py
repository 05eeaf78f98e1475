"""Events: the audit log, the console's own action outcomes and warnings, newest first."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

from console.data import EventRow, EventsPanel
from console.widgets.common import TablePane, matches, theme_colour

LEVEL_COLOURS = {"info": ("deck-good", "green"), "warning": ("deck-warn", "yellow"),
                 "error": ("deck-bad", "red")}
SESSION_EVENTS_KEPT = 200


class EventsPane(TablePane):
    COLUMNS = ("Time", "", "Event")
    FLEX_COLUMN = 2
    PANE_TITLE = "Events"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.panel = EventsPanel()
        self.session_events: list[EventRow] = []

    def add(self, event: EventRow) -> None:
        """An outcome from this console (also in the audit log when the engine wrote one)."""
        self.session_events = [event, *self.session_events][:SESSION_EVENTS_KEPT]
        self.redraw()

    def redraw(self) -> None:
        merged = sorted((*self.session_events, *self.panel.events), key=lambda e: -e.at)
        rows = [(f"{index}", self.cells(event)) for index, event in enumerate(merged)
                if matches(self.filter_text, (event.level, event.text))]
        self.fill(rows)
        self.show_message(f"audit log unreadable: {self.panel.error}" if self.panel.error else "")

    def cells(self, event: EventRow) -> tuple:
        variable, fallback = LEVEL_COLOURS.get(event.level, ("deck-muted", "grey50"))
        marker = Text("●", style=theme_colour(self, variable, fallback))
        return (time.strftime("%H:%M:%S", time.localtime(event.at)), marker, event.text)
