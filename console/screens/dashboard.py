"""The dashboard: six panes in a grid, polled sources, and the keys.

Polling: each source is read in a thread worker that only posts a SourceRead message; the
handler (UI thread) updates the pane and re-arms a one-shot timer, so polls never pile up and a
slow source delays only itself. The action keys live in DashboardActions (screens/actions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.message import Message
from textual.screen import Screen
from textual.events import Key
from textual.widgets import Input

from console.data import (Availability, DeckInfo, EventRow, local_server_row,
                          local_server_running)
from console.screens.actions import DashboardActions
from console.screens.loss_keys import LOSS_BINDINGS, LossKeys
from console.sources import DataSource, now
from console.widgets.common import TablePane
from console.widgets.events_pane import EventsPane
from console.widgets.footer import DeckFooter, DeckHeader
from console.widgets.gpu_pane import GpuPane
from console.widgets.jobs_pane import JobsPane
from console.widgets.loss_pane import LossPane
from console.widgets.models_pane import ModelsPane
from console.widgets.table import DeckTable
from console.widgets.throughput_pane import ThroughputPane

# Keys of actions that change something; a refused one says why in a toast.
MUTATING_KEYS = {"d": "deploy", "r": "rollback", "f": "finetune", "c": "compress",
                 "x": "cancel_job", "s": "toggle_server", "o": "rollout_pause",
                 "a": "rollout_abort"}
ACTION_WORDS = {"deploy": "d: deploy", "rollback": "r: roll back", "finetune": "f: fine-tune",
                "compress": "c: compress", "cancel_job": "x: cancel job",
                "toggle_server": "s: server", "rollout_pause": "o: pause/resume rollout",
                "rollout_abort": "a: abort rollout"}

# Registry-backed panes change only when someone acts: poll them less often than telemetry.
SLOW_POLL_FACTOR = 3
POLLED = ("gpus", "endpoints", "jobs", "loss", "models", "events", "availability", "deck_info",
          "alerts")
SLOW = {"models", "events", "availability"}
ONCE = {"deck_info"}  # the host and the deck home do not change while the console runs
SERVER_COLOURS = {"running": ("deck-good", "green"), "stopped": ("deck-muted", "grey50"),
                  "stale": ("deck-warn", "yellow")}


def rollout_of(panel: Any) -> tuple[str, str] | None:
    """Which rollout is in progress and whether it is paused: what the rollout keys depend on."""
    rollout = getattr(panel, "rollout", None)
    return (rollout.candidate, rollout.status) if rollout is not None else None


@dataclass
class SourceRead(Message):
    source_name: str
    value: Any
    error: str | None = None


class DashboardScreen(LossKeys, DashboardActions, Screen):
    BINDINGS = [
        Binding("d", "deploy", "Deploy", id="deploy"),
        Binding("r", "rollback", "Rollback", id="rollback"),
        Binding("f", "finetune", "Fine-tune", id="finetune"),
        Binding("c", "compress", "Compress", id="compress"),
        Binding("x", "cancel_job", "Cancel job", id="cancel"),
        Binding("h", "stop_job", "Stop early", show=False, id="stop-early"),
        Binding("C", "checkpoint_job", "Checkpoint now", show=False, id="checkpoint-now"),
        Binding("V", "register_checkpoint", "Register checkpoint", show=False,
                id="register-checkpoint"),
        Binding("s", "toggle_server", "Server", id="server"),
        Binding("o", "rollout_pause", "Pause rollout", id="rollout-pause"),
        Binding("a", "rollout_abort", "Abort rollout", id="rollout-abort"),
        Binding("l", "log_scale", "Log y", id="log-scale"),
        Binding("F", "fleet", "Fleet", show=False, id="fleet"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("t", "next_theme", "Theme", id="theme"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("q", "quit", "Quit", id="quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="clear-filter"),
        *LOSS_BINDINGS,
    ]

    def __init__(self, source: DataSource, refresh_s: float, readonly: bool,
                 startup_warnings: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.startup_warnings = startup_warnings
        self.source, self.refresh_s, self.readonly = source, refresh_s, readonly
        self.paused = False
        self.availability = Availability()
        self.targets: tuple[str, ...] = ("local",)
        self.follow_job: str | None = None  # a job started here, to select once it is listed
        self.loaded: set[str] = set()
        self.in_flight: set[str] = set()
        self.last_errors: dict[str, str] = {}
        self.server_warnings: tuple[str, ...] = ()
        self.deck_info = DeckInfo()
        self.filter_pane: TablePane | None = None  # the pane `/` filters

    def compose(self) -> ComposeResult:
        yield DeckHeader(id="header")
        with Grid(id="panes"):
            yield GpuPane(id="gpus", classes="pane")
            yield ThroughputPane(id="endpoints", classes="pane")
            yield LossPane(id="loss", classes="pane")
            yield ModelsPane(id="models", classes="pane")
            yield JobsPane(id="jobs", classes="pane")
            yield EventsPane(id="events", classes="pane")
        yield Input(placeholder="filter rows (enter keeps it, esc clears)", id="filter")
        yield DeckFooter()

    def on_mount(self) -> None:
        self.query_one("#models", ModelsPane).table.focus()
        self.update_header()
        for warning in self.startup_warnings:  # e.g. a broken theme file: reported once, here
            self.report("warning", warning)
        for name in POLLED:
            self.poll(name)

    # ---- polling --------------------------------------------------------------------------------

    def poll(self, name: str) -> None:
        if self.paused or name in self.in_flight:
            return
        self.in_flight.add(name)
        reader = self.reader(name)
        self.run_worker(partial(self.read_in_thread, name, reader), thread=True,
                        group=f"poll-{name}", exit_on_error=False)

    def reader(self, name: str) -> Callable[[], Any]:
        if name == "loss":
            return self.loss_reader()  # the job shown and a pinned baseline run
        if name == "deck_info" and not hasattr(self.source, "deck_info"):
            return DeckInfo  # a source written before the header (the header shows less)
        if name == "alerts" and not hasattr(self.source, "alerts"):
            return tuple  # a source without alerts (fixed test data)
        return getattr(self.source, name)

    def read_in_thread(self, name: str, reader: Callable[[], Any]) -> None:
        """Runs in a worker thread: reads, and only posts the result."""
        try:
            self.post_message(SourceRead(name, reader()))
        except Exception as error:  # shown in the events pane, never raised into the UI
            self.post_message(SourceRead(name, None, f"{name}: {error}"))

    def on_source_read(self, message: SourceRead) -> None:
        name = message.source_name
        if name == "baseline":  # read once when pinned; the loss poll reads it from then on
            self.show_baseline(message.value, message.error)
            return
        self.in_flight.discard(name)
        if message.error is not None:
            if self.last_errors.get(name) != message.error:  # once per distinct failure
                self.report("error", message.error, toast=False)
            self.last_errors[name] = message.error
        else:
            self.last_errors.pop(name, None)
            self.apply(name, message.value)
        self.loaded.add(name)
        interval = self.refresh_s * (SLOW_POLL_FACTOR if name in SLOW else 1)
        if not self.paused and not (name in ONCE and message.error is None):
            self.set_timer(interval, partial(self.poll, name))

    def apply(self, name: str, value: Any) -> None:
        if name == "alerts":
            return self.show_alerts(value)
        if name == "deck_info":
            self.deck_info, changed = value, False
            self.update_header()
        elif name == "availability":
            changed = value != self.availability
            self.availability = value
        elif name == "models":
            models = self.query_one("#models", ModelsPane)
            changed = value != models.panel
            self.targets = value.targets
            models.show(value)
        else:
            pane = self.query_one(f"#{name}")
            previous = pane.panel if name in ("jobs", "endpoints") else None  # type: ignore[attr-defined]
            pane.show(value)  # type: ignore[attr-defined]
            changed = (name == "jobs" and value != previous) or (
                name == "endpoints" and (local_server_running(previous) != local_server_running(value)
                                         or rollout_of(previous) != rollout_of(value)))
            if name == "endpoints":
                self.update_header()
            if name == "jobs":
                self.select_followed_job()  # a job this console just started
            if name == "jobs" and self.loaded_loss_job() != self.loss_job_id():
                self.poll("loss")  # the first jobs (or a new one): show its loss now
        if name == "endpoints" and value.warnings != self.server_warnings:
            self.server_warnings = value.warnings
            self.update_header()
        if changed:
            # Only these change which keys make sense; refreshing the footer restyles it,
            # which is too dear to do on every telemetry tick.
            self.refresh_bindings()

    @property
    def data_ready(self) -> bool:
        return self.loaded >= set(POLLED)

    def loaded_loss_job(self) -> str | None:
        return self.query_one("#loss", LossPane).series.job_id

    def loss_job_id(self) -> str | None:
        jobs = self.query_one("#jobs", JobsPane)
        selected = jobs.selected_job()
        if selected is not None:
            return selected.job_id
        if jobs.panel and jobs.panel.jobs:
            running = [job for job in jobs.panel.jobs if job.state == "running"]
            return (running or list(jobs.panel.jobs))[0].job_id
        return None

    # ---- outcomes -------------------------------------------------------------------------------

    def show_alerts(self, notices: tuple[Any, ...]) -> None:
        """Alerts announced since the last poll: Events, a toast when one fires, the bell
        when its rule sets `bell = true`."""
        for notice in notices:
            self.query_one("#events", EventsPane).add(notice.row)
            if notice.toast:
                severity = {"info": "information", "warning": "warning"}.get(notice.row.level, "error")
                self.notify(notice.row.text, severity=severity, timeout=10)  # type: ignore[arg-type]
            if notice.bell:
                self.app.bell()

    def report(self, level: str, text: str, toast: bool = True,
               audited: tuple[str, dict[str, str], float] | None = None) -> None:
        """An outcome goes to the events pane and, unless routine, to a toast. `audited`:
        (verb, arguments, when the action began) of an action the engine writes to the audit
        log; the audit's row replaces this one once it is read."""
        verb, arguments, began = audited if audited is not None else ("", {}, None)
        panes = self.query("#events").results(EventsPane)
        events = next(panes, None)
        if events is None:  # the app is closing: an action's worker finished after the panes went
            return
        events.add(EventRow(now(), level, text, verb=verb, arguments=tuple(arguments.items())),
                   began)
        if toast:
            severity = {"info": "information", "warning": "warning"}.get(level, "error")
            self.notify(text, severity=severity, timeout=6)  # type: ignore[arg-type]

    # ---- view keys ------------------------------------------------------------------------------

    def update_header(self) -> None:
        info = self.deck_info
        parts = ["modeldeck", *(part for part in (info.host, info.home) if part)]
        local = local_server_row(self.query_one("#endpoints", ThroughputPane).panel)
        if local is None:
            server = ("", "", "")
        else:
            state = "running" if local.status != "stopped" else (
                "stale" if "stale" in local.reason else "stopped")
            variable, fallback = SERVER_COLOURS[state]
            colour = str(self.app.theme_variables.get(variable, fallback))
            server = (state, local.url if state == "running" else "", colour)
        badges = (["READ-ONLY"] if self.readonly else []) + (["PAUSED"] if self.paused else [])
        badges += [f"FILTER {pane.PANE_TITLE}: {pane.filter_text}"
                   for pane in self.query(TablePane) if pane.filter_text]
        # No one should miss a local server reachable from other machines without an API key.
        badges += [f"WARNING: {warning.split(';')[0]}" for warning in self.server_warnings]
        self.query_one(DeckHeader).show(parts, server, badges)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.update_header()
        if not self.paused:
            for name in POLLED:
                self.poll(name)

    def action_log_scale(self) -> None:
        log_scale = self.query_one("#loss", LossPane).toggle_log_scale()
        self.notify(f"loss y axis: {'log' if log_scale else 'linear'}", timeout=2)

    def focused_pane(self) -> TablePane:
        """The pane whose table has the focus (Models when none has)."""
        focused = self.focused
        pane = focused.parent if focused is not None else None
        return pane if isinstance(pane, TablePane) else self.query_one("#models", ModelsPane)

    def action_filter(self) -> None:
        """Filter the focused pane's rows (its title and the header say so)."""
        self.filter_pane = self.focused_pane()
        field = self.query_one("#filter", Input)
        field.placeholder = (f"filter {self.filter_pane.PANE_TITLE} "
                             "(enter keeps it, esc clears it)")
        with field.prevent(Input.Changed):
            field.value = self.filter_pane.filter_text
        field.add_class("visible")
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        pane = self.filter_pane if field.has_focus and self.filter_pane else self.focused_pane()
        with field.prevent(Input.Changed):
            field.value = ""
        field.remove_class("visible")
        if pane.filter_text:
            pane.set_filter("")
            self.update_header()
        pane.table.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter" and self.filter_pane is not None:
            self.filter_pane.set_filter(event.value.strip())
            self.update_header()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.remove_class("visible")
            (self.filter_pane or self.focused_pane()).table.focus()

    def action_next_theme(self) -> None:
        self.app.action_next_theme()  # type: ignore[attr-defined]

    def action_fleet(self) -> None:
        """The Fleet view: the deck's [[hosts]] over ssh (console.screens.fleet)."""
        from console.screens.fleet import FleetScreen, deck_poll

        self.app.push_screen(FleetScreen(deck_poll(self.app.deck)))  # type: ignore[attr-defined]

    def action_help(self) -> None:
        from console.screens.details import DetailsScreen

        self.app.push_screen(DetailsScreen(self.help_details()))

    async def action_quit(self) -> None:
        self.app.exit()

    def on_key(self, event: Key) -> None:
        """A dimmed or hidden action key says why it does nothing (the binding, which runs
        after this, does not run at all then)."""
        if isinstance(self.focused, Input):
            return
        action = MUTATING_KEYS.get(event.key)
        if action is None:
            return
        reason = self.refusal(action)
        if reason:
            self.notify(reason, title=ACTION_WORDS.get(action, action), severity="warning",
                        timeout=4)

    def on_deck_table_row_highlighted(self, event: DeckTable.RowHighlighted) -> None:
        pane = event.table.parent
        if pane is self.query_one("#models") or pane is self.query_one("#jobs"):
            self.refresh_bindings()  # the selection decides which keys make sense
        if pane is self.query_one("#jobs"):
            self.poll("loss")  # follow the newly selected job now, not at the next tick

    def on_deck_table_row_selected(self, event: DeckTable.RowSelected) -> None:
        self.show_details(event.table.parent)
