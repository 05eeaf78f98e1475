"""The details view of a row (a version, a job, an endpoint, a GPU, an event): the sections of
console.present drawn as label/value lists and side-by-side tables. Closed with escape, q or
enter; scrolls when it is taller than the terminal."""

from __future__ import annotations

import re

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from console.present import Details, Section


NUMBER = re.compile(r"^([-+x]?[0-9.]|-$)")  # numbers, ratios, changes: right-aligned


class DetailsScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, details: Details) -> None:
        super().__init__()
        self.details = details

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide details"):
            yield Label(self.details.title, classes="dialog-title")
            with VerticalScroll():
                for section in self.details.sections:
                    yield Label(section.title, classes="details-section")
                    yield Static(section_table(section), classes="details-body")
            yield Label("esc, q or enter closes", classes="details-hint")

    def action_close(self) -> None:
        self.dismiss(None)

    @property
    def text(self) -> str:
        """Everything the view says, as plain text (for tests)."""
        from console.present import sections_text

        return sections_text(self.details)


def section_table(section: Section) -> Table:
    if section.is_table:
        table = Table(box=None, padding=(0, 2, 0, 0), show_edge=False, header_style="bold")
        for index, header in enumerate(section.headers):
            numeric = index > 0 and all(NUMBER.match(row[index]) for row in section.rows
                                        if index < len(row))
            table.add_column(header, justify="right" if numeric else "left", overflow="fold")
        for row in section.rows:
            table.add_row(*(Text(cell) for cell in row))
    else:
        table = Table(box=None, padding=(0, 2, 0, 0), show_header=False, show_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for label, value in section.pairs:
            table.add_row(Text(label), Text(value))
    if section.note:
        table.caption = section.note
        table.caption_justify = "left"
    return table
