"""Throughput: per endpoint (the local server and remote ones) tokens/s, requests/s, TTFT p95,
running/waiting, KV-cache use, a sparkline and up/down/stale status (the local server also
stopped or starting). Rates and TTFT are over the sampler's window (10 s, in the title), the
sparkline one column per window (so its width covers minutes).

Narrowing, the pane keeps the endpoint, its state, tokens/s, TTFT and the history (which
stretches to the room there is), and drops KV-cache, run/wait, then req/s."""

from __future__ import annotations

from rich.text import Text

from console.data import LOCAL_ENDPOINT, EndpointRow, EndpointsPanel, history_columns
from console.widgets.common import SparkCell, TablePane, fmt_number, matches, theme_colour
from console.widgets.table import Column

STATUS_COLOURS = {"up": ("deck-good", "green"), "down": ("deck-bad", "red"),
                  "stale": ("deck-warn", "yellow"), "degraded": ("deck-warn", "yellow"),
                  "stopped": ("deck-muted", "grey50"), "starting": ("deck-warn", "yellow")}


class ThroughputPane(TablePane):
    COLUMNS = (Column("Endpoint"), Column("State"), Column("tok/s", 1), Column("TTFT p95", 2),
               Column("History", 3, stretch=1, max_width=120), Column("req/s", 4),
               Column("run/wait", 5), Column("KV", 6))
    PANE_TITLE = "Throughput"

    panel: EndpointsPanel | None

    def compose_title(self) -> str:
        """`Throughput, 10 s window`: rates and TTFT p95 are over the sampler's window."""
        title = super().compose_title()
        window = self.panel.window_s if self.panel is not None else None
        return f"{title}, {window:.0f} s window" if window else title

    def redraw(self) -> None:
        panel = self.panel
        if panel is None:
            return
        title = self.compose_title()
        if title != self.border_title:
            self.border_title = title
        rows = [(endpoint.name, self.cells(endpoint)) for endpoint in panel.endpoints
                if matches(self.filter_text, (endpoint.name, endpoint.kind, endpoint.status))]
        self.fill(rows)
        if panel.status != "ok":
            self.show_message(f"not available: {panel.reason}")
        elif panel.endpoints and not rows:
            self.show_message(f"no endpoint matches the filter '{self.filter_text}'")
        elif all(endpoint.name == LOCAL_ENDPOINT for endpoint in panel.endpoints):
            self.show_message("no remote endpoints (add [[endpoints]] to deck.toml)")
        else:
            self.show_message("")

    def cells(self, endpoint: EndpointRow) -> tuple:
        variable, fallback = STATUS_COLOURS.get(endpoint.status, ("deck-muted", "grey50"))
        state = Text(endpoint.status, style=theme_colour(self, variable, fallback))
        ttft = fmt_number(endpoint.ttft_p95_s * 1000, 0, "ms") if endpoint.ttft_p95_s is not None else "-"
        queue = (f"{endpoint.running if endpoint.running is not None else '-'}/"
                 f"{endpoint.waiting if endpoint.waiting is not None else '-'}")
        return (endpoint.name, state, fmt_number(endpoint.tokens_per_s), ttft,
                SparkCell(history_columns(endpoint.tokens_history, self.panel.window_s,
                                          self.panel.interval_s) if self.panel else ()),
                fmt_number(endpoint.requests_per_s, 2),
                queue, fmt_number(endpoint.kv_cache_pct, 0, "%"))

    def selected_endpoint(self) -> EndpointRow | None:
        return self.selected_item(self.panel.endpoints, lambda row: row.name) if self.panel else None
