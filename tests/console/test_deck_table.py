"""DeckTable, the panes' row table: a steady refresh redraws only the rows that changed, the
cursor follows its row across refills, cells are shown as written, keys and mouse move it."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from console.widgets.table import DeckTable

pytestmark = pytest.mark.anyio


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.highlighted: list[str | None] = []
        self.selected: list[str | None] = []

    def compose(self) -> ComposeResult:
        yield DeckTable(("Name", "Value"), flex_column=1)

    def on_deck_table_row_highlighted(self, event: DeckTable.RowHighlighted) -> None:
        self.highlighted.append(event.row_key)

    def on_deck_table_row_selected(self, event: DeckTable.RowSelected) -> None:
        self.selected.append(event.row_key)


def rows(count: int, changed: dict[int, str] | None = None) -> list[tuple[str, tuple[str, str]]]:
    changed = changed or {}
    return [(f"k{index}", (f"row-{index}", changed.get(index, "1.0"))) for index in range(count)]


def screen_text(app: App) -> str:
    table = app.query_one(DeckTable)
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


async def test_a_refresh_redraws_only_the_rows_whose_cells_changed():
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        table = app.query_one(DeckTable)
        table.set_rows(rows(30))
        await pilot.pause()
        drawn: list[int] = []
        original = table.render_cells

        def counting(cells, style):
            drawn.append(1)
            return original(cells, style)

        table.render_cells = counting  # type: ignore[method-assign]
        table.set_rows(rows(30, {2: "2.0", 5: "3.0"}))  # same width: two rows changed
        await pilot.pause()
        assert len(drawn) == 2
        assert "2.0" in screen_text(app) and "3.0" in screen_text(app)
        drawn.clear()
        table.set_rows(rows(30, {2: "2.0", 5: "3.0"}))  # nothing changed: nothing drawn
        await pilot.pause()
        assert drawn == []


async def test_cells_are_shown_as_written_and_cut_to_the_column():
    app = TableApp()
    async with app.run_test(size=(40, 8)) as pilot:
        table = app.query_one(DeckTable)
        table.set_rows([("a", ("smollm2@2 [rejected]", "[bold]x[/]"))])
        await pilot.pause()
        text = screen_text(app)
        assert "smollm2@2 [rejected]" in text  # not swallowed as a markup tag
        assert "[bold]x[/]" in text
        assert text.splitlines()[0].split() == ["Name", "Value"]  # the header stays on line 0


async def test_cursor_keys_scroll_and_the_cursor_follows_its_row_across_refills():
    app = TableApp()
    async with app.run_test(size=(40, 8)) as pilot:
        table = app.query_one(DeckTable)
        table.set_rows(rows(30))
        table.focus()
        await pilot.pause()
        await pilot.press("down", "down", "pagedown")
        assert table.cursor_row == 2 + table.rows_on_screen
        assert "row-" + str(table.cursor_row) in screen_text(app)  # scrolled into view
        await pilot.press("end")
        assert table.cursor_key == "k29" and "row-29" in screen_text(app)
        await pilot.press("home")
        assert table.cursor_row == 0 and "row-0" in screen_text(app)
        await pilot.press("down")
        # Rows above it disappear (a filter): the cursor stays on the same key.
        table.set_rows([row for row in rows(30) if row[0] != "k0"])
        await pilot.pause()
        assert table.cursor_key == "k1"
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected == ["k1"]
        assert app.highlighted[-1] == "k1"


async def test_a_click_highlights_a_row_and_a_second_click_selects_it():
    app = TableApp()
    async with app.run_test(size=(40, 8)) as pilot:
        table = app.query_one(DeckTable)
        table.set_rows(rows(5))
        await pilot.pause()
        await pilot.click(DeckTable, offset=(2, 3))  # line 0 is the header: row index 2
        assert table.cursor_key == "k2"
        await pilot.click(DeckTable, offset=(2, 3))
        await pilot.pause()
        assert app.selected == ["k2"]
        await pilot.click(DeckTable, offset=(2, 0))  # the header selects nothing
        assert table.cursor_key == "k2"


async def test_the_flexible_column_is_cut_to_the_pane_instead_of_scrolling_sideways():
    app = TableApp()
    long_text = "deploy ref=smollm2-135m-instruct@1 target=local -> ok"
    async with app.run_test(size=(40, 8)) as pilot:
        table = app.query_one(DeckTable)
        table.set_rows([("a", ("row-0", long_text))])
        await pilot.pause()
        line = table.render_line(1).text
        assert "deploy ref=" in line and line.rstrip().endswith("…")
        assert table.virtual_size.width <= table.size.width  # nothing to scroll to
        await pilot.resize_terminal(100, 8)
        await pilot.pause()
        assert long_text in table.render_line(1).text  # room again: shown whole
