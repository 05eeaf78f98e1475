"""Models: versions with what each target serves, eval metrics, aliases, size and parent.

Narrowing, the pane keeps the version, where it serves and its metrics, and drops the parent,
then the size, then the aliases (enter shows the whole version)."""

from __future__ import annotations

from console.data import ModelRow, ModelsPanel
from console.widgets.common import TablePane, fmt_bytes, matches
from console.widgets.table import Column

METRICS_SHOWN = 6  # the column is cut to the pane; enter shows them all
# Short names for the Metrics column (`models show` and enter give the full ones).
SHORT_METRIC_NAMES = {"perplexity": "ppl", "eval_perplexity": "ppl", "eval_loss": "loss",
                      "decode_tokens_per_s": "tok/s", "parent_eval_loss": "parent loss"}
EMPTY_DECK_HINT = ("no models yet: `modeldeck models import PATH --name NAME` "
                   "or `modeldeck demo`")


class ModelsPane(TablePane):
    COLUMNS = (Column("Version"), Column("Serving on", 1), Column("Metrics", 1, flex=True, min_width=20),
               Column("Aliases", 2), Column("Size", 3), Column("Parent", 4))
    PANE_TITLE = "Models"

    panel: ModelsPanel | None

    def redraw(self) -> None:
        panel = self.panel
        if panel is None:
            return
        rows = [(row.ref, self.cells(row)) for row in panel.rows
                if matches(self.filter_text, (row.ref, *row.aliases, *row.serving_on, row.status))]
        self.fill(rows)
        serving = "  ".join(f"{d.target}→{d.ref} ({d.state})" for d in panel.deployments)
        if self.border_subtitle != (serving or "nothing deployed"):
            self.border_subtitle = serving or "nothing deployed"
        if panel.error:
            self.show_message(f"registry error: {panel.error}")
        elif not panel.rows:
            self.show_message(EMPTY_DECK_HINT)
        elif not rows:
            self.show_message(f"no version matches the filter '{self.filter_text}'")
        else:
            self.show_message("")

    def cells(self, row: ModelRow) -> tuple:
        seen: set[str] = set()
        shown = []
        for key, value in row.metrics:
            name = SHORT_METRIC_NAMES.get(key, key)
            if name not in seen:  # `perplexity` and the report's `ppl` say the same
                seen.add(name)
                shown.append(f"{name}={value}")
        status = "" if row.status == "ready" else f" [{row.status}]"
        return (row.ref + status, ",".join(row.serving_on) or "-",
                " ".join(shown[:METRICS_SHOWN]) or "-", ",".join(row.aliases) or "-",
                fmt_bytes(row.size_bytes), row.parent or "-")

    def selected_row(self) -> ModelRow | None:
        return self.selected_item(self.panel.rows, lambda row: row.ref) if self.panel else None
