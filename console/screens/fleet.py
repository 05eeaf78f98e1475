"""The Fleet view (key F, or the palette): every [[hosts]] host polled over ssh, with its state
(up, stale, down and why), what it serves, its server, jobs, GPUs, memory and tokens/s, and the
totals; enter opens a host's details.

The poll (ssh to every host, engine.remote.fleet) runs in a thread worker that only posts its
result; the UI thread re-arms a one-shot timer when the result lands, so polls never pile up and
a host that hangs delays only the next tick, never a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from console.present import Details, Section
from console.widgets.common import theme_colour
from engine.remote.fleet import FleetSnapshot, HostState

COLUMNS = ("HOST", "STATE", "SERVING", "SERVER", "JOBS", "GPUS", "MEMORY", "TOK/S", "REASON")
STATE_COLOURS = {"up": ("deck-good", "green"), "stale": ("deck-warn", "yellow"),
                 "down": ("deck-bad", "red")}
Poll = Callable[[], FleetSnapshot]


def deck_poll(deck: Any) -> Poll:
    """The poll of the deck's [[hosts]] (status and one telemetry snapshot per host)."""
    from engine.remote.fleet import poll_fleet

    return lambda: poll_fleet(deck.paths.run, deck.config.hosts, with_watch=True)


@dataclass
class FleetRead(Message):
    snapshot: FleetSnapshot | None
    error: str | None = None


class FleetScreen(Screen[None]):
    BINDINGS = [Binding("escape,q", "close", "Back", id="fleet-close"),
                Binding("r", "refresh", "Refresh now", id="fleet-refresh")]
    DEFAULT_CSS = """
    FleetScreen #fleet-table { height: 1fr; }
    FleetScreen .fleet-line { padding: 0 1; }
    """

    def __init__(self, poll: Poll, interval_s: float = 5.0) -> None:
        super().__init__()
        self.poll_fleet, self.interval_s = poll, interval_s
        self.snapshot: FleetSnapshot | None = None
        self.polling = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Fleet: hosts over ssh", classes="dialog-title fleet-line")
            yield Static("polling the hosts...", id="fleet-totals", classes="fleet-line")
            table: DataTable = DataTable(id="fleet-table", cursor_type="row", zebra_stripes=True)
            table.add_columns(*COLUMNS)
            yield table
            yield Static("enter: a host's details   r: poll now   esc: back",
                         classes="fleet-line")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_refresh()

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_refresh(self) -> None:
        if not self.polling:  # one poll at a time: a slow host must not stack them up
            self.polling = True
            self.read()

    @work(thread=True, exclusive=True, group="fleet-poll")
    def read(self) -> None:
        try:
            self.post_message(FleetRead(self.poll_fleet()))
        except Exception as error:  # a broken deck.toml is shown, not raised
            self.post_message(FleetRead(None, str(error) or type(error).__name__))

    def on_fleet_read(self, message: FleetRead) -> None:
        self.polling = False
        if message.snapshot is None:
            self.query_one("#fleet-totals", Static).update(f"cannot poll: {message.error}")
        else:
            self.snapshot = message.snapshot
            self.show(message.snapshot)
        self.set_timer(self.interval_s, self.action_refresh)  # re-armed when the result lands

    def show(self, snapshot: FleetSnapshot) -> None:
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for host in snapshot.hosts:
            table.add_row(*self.row(host), key=host.name)
        if snapshot.hosts:
            table.move_cursor(row=min(cursor, len(snapshot.hosts) - 1))
        self.query_one("#fleet-totals", Static).update(totals_line(snapshot))

    def row(self, host: HostState) -> tuple[Any, ...]:
        variable, fallback = STATE_COLOURS.get(host.state, ("deck-muted", "grey50"))
        state = Text(host.state, style=theme_colour(self, variable, fallback))
        if not host.answered:
            return (host.name, state, "-", "-", "-", "-", "-", "-", host.reason or "")
        summary = host.summary()
        return (host.name, state, ", ".join(summary["serving"]) or "-", summary["server"] or "-",
                _shown(summary["running_jobs"]), _shown(summary["gpus"]),
                _memory(summary["memory_used_bytes"], summary["memory_total_bytes"]),
                _rate(summary["tokens_per_s"]), host.reason or "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        from console.screens.details import DetailsScreen

        host = self.snapshot.host(str(event.row_key.value)) if self.snapshot else None
        if host is not None:
            self.app.push_screen(DetailsScreen(host_details(host)))


def totals_line(snapshot: FleetSnapshot) -> str:
    totals = snapshot.totals
    if not snapshot.hosts:
        return "no hosts: add [[hosts]] (name, ssh) to deck.toml"
    return (f"{totals['hosts']} hosts: {totals['up']} up, {totals['stale']} stale, "
            f"{totals['down']} down   GPUs {_shown(totals['gpus'])}   memory "
            f"{_memory(totals['memory_used_bytes'], totals['memory_total_bytes'])}   "
            f"{_rate(totals['tokens_per_s'])} tok/s   running jobs {_shown(totals['running_jobs'])}")


def host_details(host: HostState) -> Details:
    status, watch = host.status or {}, host.watch or {}
    sections = [Section("Host", (("name", host.name), ("ssh", host.ssh), ("state", host.state),
                                 ("reason", host.reason or "-"),
                                 ("answered in", f"{host.elapsed_s:.2f} s"),
                                 ("deck home", str(status.get("home", "-")))))]
    deployments = tuple((str(d.get("target")), str(d.get("ref")), str(d.get("state")))
                        for d in status.get("deployments") or [])
    if deployments:
        sections.append(Section("Serving", headers=("TARGET", "VERSION", "STATE"), rows=deployments))
    server = status.get("server") or {}
    if server:
        sections.append(Section("Server", (("state", str(server.get("state"))),
                                           ("url", str(server.get("url") or "-")))))
    jobs = status.get("jobs") or {}
    if jobs:
        sections.append(Section("Jobs", tuple((state, str(count)) for state, count in jobs.items())))
    devices = (watch.get("gpus") or {}).get("devices") or []
    sections.append(Section("GPUs", headers=("GPU", "NAME", "UTIL", "MEMORY"),
                            rows=tuple((str(d.get("index", i)), str(d.get("name", "-")),
                                        _shown(d.get("utilization_pct")),
                                        _memory(d.get("memory_used_bytes"),
                                                d.get("memory_total_bytes")))
                                       for i, d in enumerate(devices)),
                            note="" if devices else str((watch.get("gpus") or {}).get("reason")
                                                        or "no GPUs reported")))
    return Details(f"host {host.name}", tuple(sections))


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _memory(used: Any, total: Any) -> str:
    if used is None or total is None:
        return "-"
    return f"{used / 2**30:.1f}/{total / 2**30:.1f} GiB"
