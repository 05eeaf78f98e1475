"""Shared pieces of the panes: a titled pane around a table, bars and number formatting."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from console.widgets.table import DeckTable

from console.output import human_bytes

BAR_WIDTH = 10


def theme_colour(widget: Any, name: str, fallback: str) -> str:
    """A colour from the app's theme variables: panes never hard-code colours."""
    variables = getattr(widget.app, "theme_variables", None) or {}
    return variables.get(name, fallback)


def level_colour(widget: Any, fraction: float | None) -> str:
    if fraction is None:
        return theme_colour(widget, "deck-muted", "grey50")
    if fraction >= 0.9:
        return theme_colour(widget, "deck-bad", "red")
    if fraction >= 0.7:
        return theme_colour(widget, "deck-warn", "yellow")
    return theme_colour(widget, "deck-good", "green")


def bar(widget: Any, fraction: float | None, label: str = "", width: int = BAR_WIDTH,
        colour: str | None = None) -> Text:
    """A fixed-width gauge: filled blocks in a colour that says whether the level is healthy
    (or in `colour`, for bars where full is not a warning, like progress)."""
    if fraction is None:
        return Text("-".ljust(width) + (f" {label}" if label else ""),
                    style=theme_colour(widget, "deck-muted", "grey50"))
    clamped = max(0.0, min(1.0, fraction))
    filled = round(clamped * width)
    text = Text("█" * filled, style=colour or level_colour(widget, clamped))
    text.append("░" * (width - filled), style=theme_colour(widget, "deck-muted", "grey50"))
    if label:
        text.append(f" {label}")
    return text


def fmt_bytes(size: int | None) -> str:
    """Compact sizes for narrow columns: `98.4MB`."""
    return human_bytes(size, separator="")


def fmt_number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def matches(filter_text: str, cells: Iterable[Any]) -> bool:
    if not filter_text:
        return True
    needle = filter_text.lower()
    return any(needle in str(cell).lower() for cell in cells)


class TablePane(Vertical):
    """A bordered pane with a table and a line for 'not available' or empty states."""

    can_focus = False
    COLUMNS: Sequence[str] = ()
    FLEX_COLUMN: int | None = None  # the column cut to fit a narrow pane (None: scroll sideways)
    PANE_TITLE = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.panel: Any = None  # the last view model shown; subclasses render it in redraw()
        self.filter_text = ""
        self._shown_message: str | Text | None = None
        self.border_title = self.PANE_TITLE

    def compose(self) -> ComposeResult:
        yield DeckTable(self.COLUMNS, self.FLEX_COLUMN)
        yield Static("", classes="pane-message")

    @property
    def table(self) -> DeckTable:
        return self.query_one(DeckTable)

    def show_message(self, message: str | Text) -> None:
        if message == self._shown_message:
            return  # setting display or content again would re-layout the screen each tick
        self._shown_message = message
        label = self.query_one(".pane-message", Static)
        label.update(message)
        label.display = bool(message)
        # An empty table under a 'not available' line is only noise: show the line alone.
        self.table.display = not (message and self.table.row_count == 0)

    def fill(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Show these rows; rows with unchanged cells are not redrawn, so a steady refresh costs little."""
        self.table.set_rows(rows)

    def selected_key(self) -> str | None:
        return self.table.cursor_key

    def show(self, panel: Any) -> None:
        self.panel = panel
        self.redraw()

    def selected_item(self, items: Sequence[Any], key_of: Any) -> Any:
        """The item of `items` under the cursor, matched by the row key `key_of(item)`."""
        key = self.selected_key()
        if key is None:
            return None
        return next((item for item in items if key_of(item) == key), None)

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.redraw()

    def redraw(self) -> None:
        """Re-render the current data (subclasses keep their last view model)."""
