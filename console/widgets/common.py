"""Shared pieces of the panes: a titled pane around a table, bars and number formatting."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.markup import escape
from textual.widgets import Static

from console import present
from console.data import sparkline
from console.widgets.table import Column, DeckTable

BAR_WIDTH = 10
BAR_MIN = 4  # a stretching bar is never drawn shorter than this


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


@dataclass(frozen=True)
class BarCell:
    """A gauge that stretches with its column: blocks, then the label in a fixed width so the
    labels of one column line up. Colours are resolved by the pane (theme variables)."""

    fraction: float | None
    label: str
    colour: str
    muted: str
    label_width: int = 0
    wide_label: str = ""  # shown instead when the column has room for it (`20GiB/80GiB`)
    wide_label_width: int = 0

    @property
    def min_width(self) -> int:
        return BAR_MIN + 1 + max(self.label_width, len(self.label))

    def at_width(self, width: int) -> Text:
        wide = max(self.wide_label_width, len(self.wide_label))
        if self.wide_label and width >= 2 * BAR_MIN + 1 + wide:
            label = self.wide_label.rjust(wide)
        else:
            label = self.label.rjust(max(self.label_width, len(self.label)))
        blocks = max(1, width - len(label) - 1)
        if self.fraction is None:
            return Text("-".ljust(blocks) + " " + label, style=self.muted)
        filled = round(max(0.0, min(1.0, self.fraction)) * blocks)
        text = Text("█" * filled, style=self.colour)
        text.append("░" * (blocks - filled), style=self.muted)
        text.append(" " + label)
        return text


@dataclass(frozen=True)
class SparkCell:
    """A sparkline as wide as its column: the newest values that fit, scaled to `top`."""

    values: tuple[float, ...]
    top: float | None = None
    min_width: int = 8

    def at_width(self, width: int) -> Text:
        return Text(sparkline(self.values, width, self.top).rjust(width))  # the newest on the right


def bar_cell(widget: Any, fraction: float | None, label: str, label_width: int = 0,
             colour: str | None = None, wide_label: str = "", wide_label_width: int = 0) -> BarCell:
    clamped = None if fraction is None else max(0.0, min(1.0, fraction))
    return BarCell(clamped, label, colour or level_colour(widget, clamped),
                   theme_colour(widget, "deck-muted", "grey50"), label_width, wide_label,
                   wide_label_width)


def fmt_bytes(size: int | None) -> str:
    """Compact sizes on disk for narrow columns: `98.4MB`."""
    return present.size(size, separator="")


def fmt_memory(size: int | None) -> str:
    """Compact memory in binary units, as nvidia-smi shows it: `79.6GiB`."""
    return present.memory(size, separator="")


def fmt_number(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return present.number(value, digits, suffix)


def fmt_duration(seconds: float | None) -> str:
    return present.duration(seconds)


def matches(filter_text: str, cells: Iterable[Any]) -> bool:
    if not filter_text:
        return True
    needle = filter_text.lower()
    return any(needle in str(cell).lower() for cell in cells)


class TablePane(Vertical):
    """A bordered pane with a table and a line for 'not available' or empty states."""

    can_focus = False
    COLUMNS: Sequence[str | Column] = ()  # with priorities: see Column
    FLEX_COLUMN: int | None = None  # for plain column names: the one cut to fit a narrow pane
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

    def compose_title(self) -> str:
        """The border title: the pane's name, and the filter when one narrows its rows."""
        if self.filter_text:
            return f"{self.PANE_TITLE} (filter: {escape(self.filter_text)})"
        return self.PANE_TITLE

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
        self.border_title = self.compose_title()
        self.redraw()

    def redraw(self) -> None:
        """Re-render the current data (subclasses keep their last view model)."""
