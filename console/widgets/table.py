"""DeckTable: the panes' row table, drawn with Textual's Line API.

Why not Textual's DataTable: any cell update there invalidates the render cache of every cell
(one update counter for the whole table), so a pane whose numbers move every second re-renders
all its visible cells, header included, through rich's Padding. That was most of the console's
idle CPU. Here each row is one cached strip: a tick re-renders only the rows whose cells changed,
and only the lines on screen are drawn at all.

What it keeps of DataTable: a header line that stays put while rows scroll, a row cursor
(keys, mouse click, wheel), RowHighlighted / RowSelected messages and theme-driven styles
through component classes. What it adds: columns with priorities (a narrow pane drops its least
important columns instead of scrolling sideways), a flexible free-text column cut with an
ellipsis, and stretch columns whose cells (bars, sparklines) are drawn at the width they get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

CELL_PADDING = 1  # blank cells either side of every cell, as DataTable draws them
FLEX_COLUMN_MIN = 8  # the flexible column is never cut narrower than this (or its header)


@dataclass(frozen=True)
class Column:
    """A column and how it gives way when the pane narrows.

    priority: 0 is never dropped; as the pane narrows, the column with the highest number goes
    first (a pane ranks its key columns low), so no pane scrolls sideways for its key columns.
    flex: free text (an event, a metrics list), cut with an ellipsis to the room left.
    stretch: bars and sparklines (cells that are Fill objects) take the room left over, up to
    max_width cells, shared by weight.
    """

    name: str
    priority: int = 0
    flex: bool = False
    stretch: int = 0
    max_width: int = 0
    min_width: int = 0  # a flexible column is dropped rather than cut below this (or its text)
    hide_empty: bool = False  # not shown while every cell is empty (a feature not configured)


class Fill(Protocol):
    """A cell drawn at whatever width its column gets (a bar, a sparkline)."""

    min_width: int

    def at_width(self, width: int) -> Text: ...


def as_text(cell: Any, width: int | None = None) -> Text:
    """Cells are rich Text, Fill cells or plain values; plain values are never parsed as markup
    (an endpoint called `[prod]` must show as written)."""
    if isinstance(cell, Text):
        return cell
    if hasattr(cell, "at_width"):
        return cell.at_width(width if width is not None else cell.min_width)
    return Text(str(cell))


def cell_width(cell: Any) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    if hasattr(cell, "at_width"):
        return int(cell.min_width)
    return Text(str(cell)).cell_len


def as_column(column: str | Column, index: int, flex_column: int | None) -> Column:
    if isinstance(column, Column):
        return column
    return Column(column, flex=index == flex_column)


class DeckTable(ScrollView, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("home,g", "first_row", "First", show=False),
        Binding("end,G", "last_row", "Last", show=False),
        Binding("enter", "select_row", "Select", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"deck-table--header", "deck-table--cursor"}
    DEFAULT_CSS = """
    DeckTable {
        background: $surface;
        color: $foreground;
        & > .deck-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .deck-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .deck-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    class RowMessage(Message):
        def __init__(self, table: DeckTable, cursor_row: int, row_key: str | None) -> None:
            super().__init__()
            self.table, self.cursor_row, self.row_key = table, cursor_row, row_key

        @property
        def control(self) -> DeckTable:
            return self.table

    class RowHighlighted(RowMessage):
        """The cursor moved to another row (or the rows under it changed)."""

    class RowSelected(RowMessage):
        """Enter (or a click on the highlighted row): the pane shows details."""

    def __init__(self, columns: Sequence[str | Column], flex_column: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs = tuple(as_column(column, index, flex_column) for index, column in enumerate(columns))
        self.columns = tuple(spec.name for spec in self.specs)
        self.row_keys: list[str] = []
        self.rows: list[tuple[Any, ...]] = []  # Text or Fill cells
        self.natural_widths = self.measure([])  # the widest cell (or header) of each column
        self.column_widths = list(self.natural_widths)  # as drawn; 0: dropped for lack of room
        self.shown_columns = list(range(len(self.columns)))
        self._strips: dict[int, Strip] = {}  # row index -> rendered row at the virtual width
        self._header: Strip | None = None
        self.cursor_row = 0
        self._styles: tuple[Style, Style, Style] = (Style(), Style(), Style())

    # ---- data ------------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.rows)

    @property
    def cursor_key(self) -> str | None:
        return self.row_keys[self.cursor_row] if 0 <= self.cursor_row < len(self.row_keys) else None

    def set_rows(self, rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Show these rows. Rows whose cells are unchanged keep their cached strips; the
        cursor stays on the same key when that row is still there."""
        keys = [key for key, _ in rows]
        texts = [tuple(cell if isinstance(cell, Text) or hasattr(cell, "at_width") else Text(str(cell))
                       for cell in cells) for _, cells in rows]
        natural = self.measure(texts)
        if natural != self.natural_widths or keys != self.row_keys:
            previous_key = self.cursor_key
            self.row_keys, self.rows, self.natural_widths = keys, texts, natural
            self.relayout()
            self.keep_cursor(previous_key)
            return
        for index, cells in enumerate(texts):
            if cells != self.rows[index]:
                self.rows[index] = cells
                self._strips.pop(index, None)
                self.refresh_lines(index + 1)  # virtual line: the header is line 0

    def measure(self, rows: list[tuple[Any, ...]]) -> list[int]:
        widths = [len(name) for name in self.columns]
        for cells in rows:
            for column, cell in enumerate(cells[:len(widths)]):
                widths[column] = max(widths[column], cell_width(cell))
        return widths

    def floor(self, index: int, natural: list[int]) -> int:
        """The narrowest a shown column may be: a flexible one down to its header (or
        FLEX_COLUMN_MIN), the others as wide as their widest cell."""
        spec = self.specs[index]
        if spec.flex:
            return min(natural[index], max(len(spec.name), spec.min_width or FLEX_COLUMN_MIN))
        return natural[index]

    def fitted(self, natural: list[int]) -> list[int]:
        """Widths for the pane's width: drop the least important columns until the rest fit,
        cut the flexible column to the room left, and give what remains to stretch columns.
        Only when the never-dropped columns alone are too wide does the table scroll."""
        room = self.scrollable_content_region.width
        if room <= 0:
            return list(natural)
        shown = [index for index in range(len(natural)) if not (self.specs[index].hide_empty and all(
            cell_width(cells[index]) == 0 for cells in self.rows if index < len(cells)))]

        def need(columns: list[int]) -> int:
            return sum(self.floor(index, natural) + 2 * CELL_PADDING for index in columns)

        while need(shown) > room:
            droppable = [index for index in shown if self.specs[index].priority > 0]
            if not droppable:
                break
            shown.remove(max(droppable, key=lambda index: (self.specs[index].priority, index)))
        widths = [0] * len(natural)
        for index in shown:
            widths[index] = self.floor(index, natural)
        spare = room - need(shown)
        for index in shown:  # the flexible column takes back what it was cut by
            if self.specs[index].flex and spare > 0:
                grow = min(spare, natural[index] - widths[index])
                widths[index] += grow
                spare -= grow
        self.stretch(widths, shown, spare)
        return widths

    def stretch(self, widths: list[int], shown: list[int], spare: int) -> None:
        """Share `spare` cells among the stretch columns, by weight, up to their max_width."""
        stretchy = [index for index in shown if self.specs[index].stretch > 0]
        while spare > 0 and stretchy:
            weights = sum(self.specs[index].stretch for index in stretchy)
            given = 0
            for index in list(stretchy):
                spec = self.specs[index]
                share = max(1, spare * spec.stretch // weights)
                limit = spec.max_width or 10_000
                grow = min(share, limit - widths[index], spare - given)
                widths[index] += max(0, grow)
                given += max(0, grow)
                if widths[index] >= limit:
                    stretchy.remove(index)
            if given == 0:
                break
            spare -= given

    def relayout(self) -> None:
        """New widths (rows, or the pane's size, changed): every cached strip is stale."""
        self.column_widths = self.fitted(self.natural_widths)
        self.shown_columns = [index for index, width in enumerate(self.column_widths) if width > 0]
        self._strips.clear()
        self._header = None
        self.virtual_size = Size(self.total_width, len(self.rows) + 1)
        self.refresh()

    def on_resize(self) -> None:
        if self.fitted(self.natural_widths) != self.column_widths:
            self.relayout()

    @property
    def total_width(self) -> int:
        return sum(self.column_widths[index] + 2 * CELL_PADDING for index in self.shown_columns)

    @property
    def columns_shown(self) -> tuple[str, ...]:
        """The names of the columns the pane has room for (the others are dropped)."""
        return tuple(self.columns[index] for index in self.shown_columns)

    def keep_cursor(self, previous_key: str | None) -> None:
        self.cursor_row = (self.row_keys.index(previous_key) if previous_key in self.row_keys
                           else min(self.cursor_row, max(0, len(self.rows) - 1)))
        if self.cursor_key != previous_key:  # another row is under the cursor now
            self.post_message(self.RowHighlighted(self, self.cursor_row, self.cursor_key))

    # ---- cursor ----------------------------------------------------------------------------------

    def move_cursor(self, row: int) -> None:
        if not self.rows:
            return
        target = max(0, min(row, len(self.rows) - 1))
        if target == self.cursor_row:
            return
        self.refresh_lines(self.cursor_row + 1)
        self.cursor_row = target
        self.refresh_lines(target + 1)
        self.scroll_to_cursor()
        self.post_message(self.RowHighlighted(self, target, self.cursor_key))

    @property
    def rows_on_screen(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def scroll_to_cursor(self) -> None:
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + self.rows_on_screen:
            self.scroll_to(y=self.cursor_row - self.rows_on_screen + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self.cursor_row - self.rows_on_screen)

    def action_page_down(self) -> None:
        self.move_cursor(self.cursor_row + self.rows_on_screen)

    def action_first_row(self) -> None:
        self.move_cursor(0)

    def action_last_row(self) -> None:
        self.move_cursor(len(self.rows) - 1)

    def action_select_row(self) -> None:
        if self.rows:
            self.post_message(self.RowSelected(self, self.cursor_row, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        if event.y < 1:  # the header
            return
        row = round(self.scroll_y) + event.y - 1
        if not 0 <= row < len(self.rows):
            return
        if row == self.cursor_row:
            self.action_select_row()
        else:
            self.move_cursor(row)

    # ---- drawing ---------------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        """Look the styles up once per drawing pass; cached strips drawn in other styles (a
        theme switch, focus, or a first pass before the stylesheet applied) are dropped."""
        styles = (self.rich_style, self.get_component_rich_style("deck-table--header"),
                  self.get_component_rich_style("deck-table--cursor"))
        if styles != self._styles:
            self._styles = styles
            self._strips.clear()
            self._header = None
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base, header_style, cursor_style = self._styles
        if y == 0:
            header_style = base + header_style
            if self._header is None:
                self._header = self.render_cells([Text(name) for name in self.columns], header_style)
            return self._header.crop_extend(scroll_x, scroll_x + width, header_style)
        index = scroll_y + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, base)
        strip = self._strips.get(index)
        if strip is None:
            strip = self._strips[index] = self.render_cells(self.rows[index], base)
        if index == self.cursor_row:
            # On top of the cells' own colours, so the cursor reads the same on every row.
            strip = Strip(Segment.apply_style(strip, post_style=cursor_style), strip.cell_length)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def render_cells(self, cells: Sequence[Any], style: Style) -> Strip:
        """One row at the table's full width: each shown cell cut to its column with an
        ellipsis (Fill cells drawn at the column's width)."""
        pad = " " * CELL_PADDING
        line = Text(no_wrap=True, end="")
        for index in self.shown_columns:
            width = self.column_widths[index]
            cell = cells[index] if index < len(cells) else Text("")
            line.append(pad)
            shown = as_text(cell, width).copy()
            shown.truncate(width, overflow="ellipsis", pad=True)
            line.append_text(shown)
            line.append(pad)
        # Text.render leaves the base style to its caller: put it under every segment.
        return Strip(Segment.apply_style(line.render(self.app.console), style), self.total_width)
