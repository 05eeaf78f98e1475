"""Throughput: per endpoint (the local server and remote ones) tokens/s, requests/s, TTFT p95,
running/waiting, KV-cache use, a sparkline and up/down/stale status (the local server also
stopped or starting). Rates and TTFT are over the sampler's window (10 s, in the title), the
sparkline one column per window (so its width covers minutes).

While a rollout is in progress on the local server, a row per version follows `local` (live
first, then the candidate): its share of traffic, failed requests, tok/s and TTFT p95 in the
same columns, and the pane's line says the step (shortened to fit a narrow pane).

With [slo] in deck.toml, the SLO column is the share of the window's requests that met every
bound (per version too); without one the column is not shown.

Below the rows, the highlighted endpoint's diagnosis (engine.telemetry.diagnosis) in one line,
when the pane has a line to spare after its rows (a rollout's step line takes precedence).

Narrowing, the pane keeps the endpoint, its state, tokens/s, TTFT and the history (which
stretches to the room there is), and drops SLO, KV-cache, run/wait, then req/s."""

from __future__ import annotations

import dataclasses

from rich.text import Text

from console import present, present_live
from console.data import (LOCAL_ENDPOINT, EndpointRow, EndpointsPanel, RolloutView, VersionRow,
                          history_columns)
from console.widgets.common import SparkCell, TablePane, fmt_number, matches, theme_colour
from console.widgets.table import Column

STATUS_COLOURS = {"up": ("deck-good", "green"), "down": ("deck-bad", "red"),
                  "stale": ("deck-warn", "yellow"), "degraded": ("deck-warn", "yellow"),
                  "stopped": ("deck-muted", "grey50"), "starting": ("deck-warn", "yellow")}


class ThroughputPane(TablePane):
    COLUMNS = (Column("Endpoint"), Column("State"), Column("tok/s", 1), Column("TTFT p95", 2),
               Column("History", 3, stretch=1, max_width=120), Column("req/s", 4),
               Column("run/wait", 5), Column("KV", 6), Column("SLO", 7, hide_empty=True))
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
        rows = []
        for endpoint in panel.endpoints:
            if matches(self.filter_text, (endpoint.name, endpoint.kind, endpoint.status)):
                rows.append((endpoint.name, self.cells(endpoint)))
                if endpoint.name == LOCAL_ENDPOINT and panel.rollout is not None:
                    rows.extend(self.version_rows(endpoint, panel.rollout))
        self.fill(rows)
        if panel.status != "ok":
            self.show_message(f"not available: {panel.reason}")
        elif panel.endpoints and not rows:
            self.show_message(f"no endpoint matches the filter '{self.filter_text}'")
        elif panel.rollout is not None:
            self.show_message(self.rollout_line(panel.rollout))
        elif all(endpoint.name == LOCAL_ENDPOINT for endpoint in panel.endpoints):
            self.show_message("no remote endpoints (add [[endpoints]] to deck.toml)")
        else:
            self.show_message(self.diagnosis_line(len(rows)))

    def diagnosis_line(self, row_count: int) -> Text | str:
        """The highlighted endpoint's diagnosis, one line cut to the pane's width; nothing when
        the line would push a row out of a short pane (the rows come first)."""
        endpoint = self.selected_endpoint() or (self.panel.endpoints[0] if self.panel and
                                                self.panel.endpoints else None)
        room = self.size.height - 2 - 1 - row_count  # borders, header, rows
        if endpoint is None or not endpoint.diagnosis or room < 1:
            return ""
        line = Text(f"{endpoint.name}: ", style="bold")
        line.append(endpoint.diagnosis)
        line.truncate(max(8, self.size.width - 4), overflow="ellipsis")
        return line

    def cells(self, endpoint: EndpointRow) -> tuple:
        variable, fallback = STATUS_COLOURS.get(endpoint.status, ("deck-muted", "grey50"))
        state = Text(endpoint.status, style=theme_colour(self, variable, fallback))
        ttft = fmt_number(endpoint.ttft_p95_s * 1000, 0, "ms") if endpoint.ttft_p95_s is not None else "-"
        queue = (f"{endpoint.running if endpoint.running is not None else '-'}/"
                 f"{endpoint.waiting if endpoint.waiting is not None else '-'}")
        name: str | Text = endpoint.name
        if endpoint.discovered:  # running here, but deck.toml does not name it
            name = Text.assemble(endpoint.name, (" discovered", theme_colour(
                self, "deck-muted", "grey50")))
        return (name, state, fmt_number(endpoint.tokens_per_s), ttft,
                SparkCell(history_columns(endpoint.tokens_history, self.panel.window_s,
                                          self.panel.interval_s) if self.panel else ()),
                fmt_number(endpoint.requests_per_s, 2),
                queue, fmt_number(endpoint.kv_cache_pct, 0, "%"), present.slo_attainment(endpoint.slo))

    def version_rows(self, local: EndpointRow, rollout: RolloutView) -> list[tuple[str, tuple]]:
        """Live, then the candidate, with what the server's per-version series say."""
        measured = {row.ref: row for row in local.versions}
        state = dataclasses.asdict(rollout)
        rows = []
        for ref in (rollout.live, rollout.candidate):
            version = measured.get(ref, VersionRow(ref))
            failed = version.failed or 0.0
            variable, fallback = ("deck-bad", "red") if failed > 0 else ("deck-good", "green")
            errors = Text(present.failures(version.failed, version.requests),
                          style=theme_colour(self, variable, fallback))
            ttft = (fmt_number(version.ttft_p95_s * 1000, 0, "ms")
                    if version.ttft_p95_s is not None else "-")
            rows.append((f"{LOCAL_ENDPOINT} {ref}", (
                f"└{ref} {present_live.version_weight(ref, state)}", errors,
                fmt_number(version.tokens_per_s), ttft, SparkCell(()), "", "", "",
                present.slo_attainment(version.slo))))
        return rows

    def rollout_line(self, rollout: RolloutView) -> str:
        state = dataclasses.asdict(rollout)
        full = present_live.rollout_line(state)
        room = self.size.width - 4  # the border and the line's padding
        return full if room <= 0 or len(full) <= room else present_live.rollout_line(state, short=True)

    def on_resize(self) -> None:
        if self.panel is not None:
            self.redraw()  # the step line is shortened to the width; the diagnosis needs room

    def on_deck_table_row_highlighted(self) -> None:
        panel = self.panel  # the diagnosis line follows the highlighted endpoint
        if panel is not None and panel.rollout is None and panel.status == "ok" \
                and self.table.row_count and any(e.name != LOCAL_ENDPOINT for e in panel.endpoints):
            self.show_message(self.diagnosis_line(self.table.row_count))

    def selected_endpoint(self) -> EndpointRow | None:
        return self.selected_item(self.panel.endpoints, lambda row: row.name) if self.panel else None
