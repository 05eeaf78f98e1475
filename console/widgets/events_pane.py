"""Events: one row per action, newest first: the audit log (with each action's result as the
registry has it) and what only this console knows (an error raised before anything was
written, a refused key, a broken theme file).

An action the engine audits (deploy, rollback, fine-tune, cancel) is reported by this console
at once, and its row is replaced by the audit's row when that arrives, so it never shows twice.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from console import present
from console.data import EventRow, EventsPanel
from console.widgets.common import TablePane, matches, theme_colour
from console.widgets.table import Column

LEVEL_COLOURS = {"info": ("deck-good", "green"), "warning": ("deck-warn", "yellow"),
                 "error": ("deck-bad", "red")}
SESSION_EVENTS_KEPT = 200
AUDIT_CLOCK_SLACK_S = 2.0  # the audit row is written by another thread (or process) just before


class EventsPane(TablePane):
    COLUMNS = (Column("Time", 1), Column(""), Column("Event", flex=True, min_width=26))
    PANE_TITLE = "Events"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.panel = EventsPanel()
        self.session_events: list[EventRow] = []
        self.began: dict[str, float] = {}  # event key -> when its action began
        self.shown: list[EventRow] = []

    def add(self, event: EventRow, started_at: float | None = None) -> None:
        """An outcome from this console. With `event.verb` set, the engine audits the same
        action: the row gives way to the audit's row once it is read."""
        self.began[event_key(event)] = started_at if started_at is not None else event.at
        self.session_events = [event, *self.session_events][:SESSION_EVENTS_KEPT]
        self.redraw()

    def superseded(self, event: EventRow) -> bool:
        if not event.verb:
            return False
        began = self.began.get(event_key(event), event.at)
        subject = dict(event.arguments)
        for audited in self.panel.events:
            if (audited.verb == event.verb and began - AUDIT_CLOCK_SLACK_S <= audited.at
                    <= event.at + AUDIT_CLOCK_SLACK_S
                    and all(value in dict(audited.arguments).values() for value in subject.values())):
                return True
        return False

    def redraw(self) -> None:
        session = [event for event in self.session_events if not self.superseded(event)]
        merged = sorted((*session, *self.panel.events), key=lambda e: -e.at)
        self.shown = [event for event in merged if matches(self.filter_text, (event.level, event.text))]
        self.fill([(event_key(event), self.cells(event)) for event in self.shown])
        if self.panel.error:
            self.show_message(f"audit log unreadable: {self.panel.error}")
        elif merged and not self.shown:
            self.show_message(f"no event matches the filter '{self.filter_text}'")
        else:
            self.show_message("")

    def cells(self, event: EventRow) -> tuple:
        variable, fallback = LEVEL_COLOURS.get(event.level, ("deck-muted", "grey50"))
        marker = Text("●", style=theme_colour(self, variable, fallback))
        return (present.clock(event.at), marker, event.text)

    def selected_event(self) -> EventRow | None:
        return self.selected_item(self.shown, event_key)


def event_key(event: EventRow) -> str:
    return f"{event.origin}:{event.at:.6f}:{event.verb}:{event.text[:40]}"
