"""What a new user sees in the first hour, at 80x24, 120x36 and 200x60: every pane keeps its
key columns without scrolling sideways, the header and the help/quit keys are always there,
nothing on any screen is a Python repr, filters say where they apply, silent modes speak."""

from __future__ import annotations

import dataclasses
import re

import pytest

from tests.console.console_helpers import fixed_app, record_toasts, screen_text, wait_until_loaded

from console import present, replay
from console.app import ModeldeckApp
from console.data import ModelsPanel, JobsPanel
from console.screens.details import DetailsScreen
from console.widgets.table import DeckTable

pytestmark = pytest.mark.anyio
SIZES = [(80, 24), (120, 36), (200, 60)]
KEY_COLUMNS = {"gpus": ("GPU", "Util", "Memory"), "endpoints": ("Endpoint", "State", "tok/s"),
               "models": ("Version", "Serving on"), "jobs": ("Job", "State", "Progress", "ETA"),
               "events": ("Event",)}
# At 120x36 and wider these are on screen too (they were hidden or cut before).
WIDE_COLUMNS = {"endpoints": ("History", "TTFT p95"), "models": ("Metrics",),
                "jobs": ("Kind", "Model"), "gpus": ("History",)}
# Python reprs a person must never read: None, dict/tuple/list literals, epoch seconds.
REPRS = [re.compile(pattern) for pattern in (
    r"\bNone\b", r"\{'", r"\(0\.0,", r"\[\(", r"\b1[0-9]{9}\.[0-9]+", r"\bquestion_mark\b",
    r"<[a-zA-Z_.]+ object at 0x", r"\bslash\b")]


def reprs_in(text: str) -> list[str]:
    return [match.group(0) for pattern in REPRS for match in pattern.finditer(text)]


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
async def test_every_pane_keeps_its_key_columns_without_scrolling_sideways(deck, size):
    app = fixed_app(deck)
    async with app.run_test(size=size) as pilot:
        await wait_until_loaded(pilot, app, extra=0.1)
        for table in app.dashboard.query(DeckTable):
            pane = table.parent.id
            region = table.scrollable_content_region.width
            assert table.virtual_size.width <= region, (pane, table.virtual_size.width, region)
            assert set(KEY_COLUMNS[pane]) <= set(table.columns_shown), (pane, table.columns_shown)
            if size[0] >= 120:
                assert set(WIDE_COLUMNS.get(pane, ())) <= set(table.columns_shown), pane
        text = screen_text(app)
        lines = text.splitlines()
        assert "? Help" in lines[-1] and "q Quit" in lines[-1], lines[-1]
        assert "gpu-box-01" in lines[0] and "local running http://127.0.0.1:8471" in lines[0]
        assert "2f182e" in text and "running" in text and "12m34s" in text  # short id, state, ETA
        assert "79.6GiB" in text or size[0] < 200  # binary units, as nvidia-smi shows them
        assert not reprs_in(text), reprs_in(text)


async def test_bars_and_sparklines_stretch_with_the_pane(deck):
    widths = {}
    for size in ((120, 36), (200, 60)):
        app = fixed_app(deck)
        async with app.run_test(size=size) as pilot:
            await wait_until_loaded(pilot, app)
            table = app.dashboard.query_one("#endpoints").table
            widths[size[0]] = table.column_widths[table.columns.index("History")]
    assert widths[120] >= 12 and widths[200] >= 2 * widths[120], widths


async def test_no_screen_shows_a_python_repr(deck, tiny_model_dir):
    """The dashboard, every details view, help and the palette, scanned for reprs."""
    from engine.registry.inspect import describe_source

    registry = deck.registry
    parent = registry.register("smol", describe_source(tiny_model_dir), produced_by="import",
                               source=str(tiny_model_dir))
    registry.register("smol", describe_source(tiny_model_dir), produced_by="compress",
                      source=parent.ref, parent_version=1, metrics=COMPRESSED_METRICS,
                      lineage={"parent": parent.ref, "method": "int8", "settings": {"keep": None}})
    registry.register("smol", describe_source(tiny_model_dir), produced_by="finetune",
                      source="finetune-20260101-001000-2f182e", parent_version=1,
                      metrics={"eval_loss": 3.29, "perplexity": 26.8, "parent_eval_loss": 3.31},
                      lineage={"parent": parent.ref, "job_id": "finetune-20260101-001000-2f182e",
                               "settings": {"method": "lora", "lora_rank": 8, "eval_file": None}})
    snapshot = dataclasses.replace(replay.snapshot(), models=ModelsPanel(tuple(
        dataclasses.replace(row, ref=f"smol@{row.version}") for row in replay.models().rows[1:])))
    app = fixed_app(deck, snapshot)
    seen: dict[str, str] = {}
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        seen["dashboard"] = screen_text(app)
        screen = app.dashboard
        for pane in ("jobs", "endpoints", "gpus", "events", "models"):
            for row in range(screen.query_one(f"#{pane}").table.row_count):
                screen.query_one(f"#{pane}").table.focus()
                screen.query_one(f"#{pane}").table.move_cursor(row)
                await pilot.press("enter")
                for _ in range(50):
                    await pilot.pause(0.02)
                    if isinstance(app.screen, DetailsScreen):
                        break
                assert isinstance(app.screen, DetailsScreen), (pane, row, events(app))
                await pilot.pause(0.05)
                seen[f"{pane} {row}"] = screen_text(app) + "\n" + app.screen.text
                await pilot.press("escape")
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert isinstance(app.screen, DetailsScreen)
        seen["help"] = screen_text(app) + "\n" + app.screen.text
        await pilot.press("escape", "ctrl+p")
        await pilot.pause(0.3)
        seen["palette"] = screen_text(app)
    found = {name: reprs_in(text) for name, text in seen.items() if reprs_in(text)}
    assert not found, found
    compressed = seen["models 1"]
    for words in ("138.5 MB", "541.6 MB", "x0.26", "+2.9%", "verdict: accepted", "parent", "result"):
        assert words in compressed, words
    assert re.search(r"created\s+20\d\d-\d\d-\d\d \d\d:\d\d", compressed)
    assert "eval loss" in seen["models 0"] and "3.3100" in seen["models 0"]
    assert "time to first token" in seen["endpoints 0"] and "p99" in seen["endpoints 0"]
    assert "79.6 GiB" in seen["gpus 0"]
    assert "/" in seen["help"] and "j" in seen["help"] and "g G" in seen["help"]


COMPRESSED_METRICS = {
    "perplexity": 28.0, "decode_tokens_per_s": 25.8,
    "compression": {
        "parent": {"perplexity": 27.21, "decode_tokens_per_s": 14.0, "ttft_s": 0.126,
                   "size_bytes": 541_600_000, "peak_memory_bytes": 612_000_000,
                   "weights_memory_bytes": 540_000_000, "param_count": 134_515_008,
                   "linear_weight_bytes": 430_000_000},
        "result": {"perplexity": 28.0, "decode_tokens_per_s": 25.8, "ttft_s": 0.071,
                   "size_bytes": 138_544_031, "peak_memory_bytes": 200_000_000,
                   "weights_memory_bytes": 140_000_000, "param_count": 134_515_008,
                   "linear_weight_bytes": 107_500_000},
        "change": {"perplexity_pct": 2.9, "decode_speedup": 1.84, "ttft_ratio": 0.56,
                   "size_ratio": 0.256, "peak_memory_ratio": 0.33, "param_ratio": 1.0,
                   "linear_weight_ratio": 0.25},
        "verdict": "accepted", "verdict_reason": "perplexity +2.9% within 5%", "method": "int8",
        "settings": {"keep": []}, "notes": [], "eval_file": "/x/eval.txt", "parent_ref": "smol@1"}}


def events(app) -> list[str]:
    return [event.text for event in app.dashboard.query_one("#events").session_events]


async def test_a_filter_narrows_the_focused_pane_only_and_says_so(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        jobs, models = app.dashboard.query_one("#jobs"), app.dashboard.query_one("#models")
        jobs.table.focus()
        await pilot.press("slash", *"fail", "enter")
        assert jobs.table.row_count == 1 and models.table.row_count == 4
        assert "filter: fail" in str(jobs.border_title)
        assert "filter" not in str(models.border_title)
        header = screen_text(app).splitlines()[0]
        assert "FILTER Jobs: fail" in header, header
        assert app.focused is jobs.table
        await pilot.press("escape")  # clears the focused pane's filter
        assert jobs.table.row_count == 3
        assert "filter" not in str(jobs.border_title)
        assert "FILTER" not in screen_text(app).splitlines()[0]


async def test_readonly_shows_a_badge_and_a_refused_key_says_why(deck):
    app = fixed_app(deck, readonly=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_loaded(pilot, app)
        toasts = record_toasts(app)
        assert "READ-ONLY" in screen_text(app).splitlines()[0]
        await pilot.press("d")
        await pilot.pause(0.1)
        assert app.screen is app.dashboard  # refused: nothing opened
        assert any("read-only" in toast for toast in toasts), toasts
        await pilot.press("p")
        assert "PAUSED" in screen_text(app).splitlines()[0]


async def test_an_empty_deck_dims_the_actions_and_says_how_to_add_a_model(deck):
    empty = dataclasses.replace(replay.snapshot(), models=ModelsPanel(), jobs=JobsPanel())
    app = fixed_app(deck, empty)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        toasts = record_toasts(app)
        for key in "drfcs":
            await pilot.press(key)
            await pilot.pause(0.05)
            assert app.screen is app.dashboard, key
        assert len([toast for toast in toasts if "modeldeck models import PATH" in toast]) >= 4, toasts
        assert "modeldeck models import PATH" in screen_text(app)
        for action in ("deploy", "rollback", "finetune", "compress", "toggle_server"):
            assert app.dashboard.check_action(action, ()) is None, action  # dimmed


async def test_enter_on_an_event_shows_the_whole_event(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_loaded(pilot, app)
        app.dashboard.query_one("#events").table.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, DetailsScreen)
        text = app.screen.text
        for words in ("deploy smollm2@4 to local: failed (probe 1 answered http 500)",
                      "gate checks", "probe 1", "failed", "2026-01-01 00:15:00", "ops"):
            assert words in text, words


def test_a_failed_gate_is_one_failed_row_never_ok():
    from types import SimpleNamespace

    from console.sources import audit_events

    arguments = {"ref": "tiny@2", "target": "local", "force": False}
    entries = [  # newest first, as the registry lists them
        SimpleNamespace(id=3, at=30.0, user="ops", verb="deploy", arguments=arguments,
                        result="failed", detail='{"checks": []}', reason="probe 1: http 500",
                        history_id=None),
        SimpleNamespace(id=2, at=29.0, user="ops", verb="deploy", arguments=arguments,
                        result="ok", detail=None, reason=None, history_id=7),
        SimpleNamespace(id=1, at=9.0, user="ops", verb="deploy",
                        arguments={"ref": "tiny@3", "target": "local"}, result="ok",
                        detail=None, reason=None, history_id=8)]
    rows = audit_events(entries, {7: "failed", 8: "pending"})
    texts = [row.text for row in rows]
    assert texts == ["deploy tiny@2 to local: failed (probe 1: http 500)",
                     "deploy tiny@3 to local: pending"], texts
    assert not any(text.endswith(": ok") or "-> ok" in text for text in texts)


async def test_a_deploy_from_the_console_is_one_events_row(two_version_deck):
    app = ModeldeckApp(two_version_deck, refresh_s=30.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        await pilot.press("d", "enter")
        await pilot.pause(0.3)
        await pilot.press("y")
        pane = app.dashboard.query_one("#events")
        for _ in range(200):
            await pilot.pause(0.02)
            if any(event.verb == "deploy" and "tiny@2" in event.text for event in pane.panel.events):
                break
        await pilot.pause(0.05)
        rows = [event.text for event in pane.shown if "tiny@2" in event.text and "deploy" in event.text]
        # No server runs and the tests turn autostart off: the pointer moves and waits, pending,
        # for the server's start to gate it. One row, saying so.
        assert len(rows) == 1 and rows[0].startswith("deploy tiny@2 to local: pending"), rows


async def test_only_the_projects_themes_are_offered(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        assert set(app.available_themes) == set(app.deck_theme_names)
        seen = set()
        for _ in range(len(app.deck_theme_names) + 1):
            await pilot.press("t")
            seen.add(app.theme)
        assert seen == set(app.deck_theme_names)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert "Theme" not in titles


async def test_vim_keys_move_the_cursor(deck):
    app = fixed_app(deck)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until_loaded(pilot, app)
        table = app.dashboard.query_one("#models").table
        table.focus()
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == table.row_count - 1
        await pilot.press("g")
        assert table.cursor_row == 0


def test_units_dates_and_plain_values():
    assert present.size(138_544_031) == "138.5 MB"
    assert present.memory(85_520_809_984) == "79.6 GiB"  # an "80GB" H100, as nvidia-smi says
    assert present.memory(512 * 1024 * 1024) == "512.0 MiB"
    assert present.when(1_795_636_062.1479366) == "2026-11-25 19:47"
    assert present.plain(None) == "-" and present.plain((0.0, 1.5)) == "0, 1.5"
    assert present.plain({"a": 1, "b": None}) == "a=1"
    assert present.short_job_id("finetune-20261125-193823-2f182e") == "2f182e"
    assert present.duration(None) == "-" and present.duration(754) == "12m34s"


def test_present_imports_no_ui():
    import subprocess
    import sys

    code = ("import sys, console.present, console.present_models, console.present_jobs, "
            "console.present_live; "
            "print([m for m in ('textual', 'rich', 'torch', 'engine') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
