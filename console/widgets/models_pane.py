"""Models: versions with size, parent, eval metrics and aliases, and what each target serves."""

from __future__ import annotations

from console.data import ModelRow, ModelsPanel
from console.widgets.common import TablePane, fmt_bytes, matches

METRICS_SHOWN = 3
# Short names for the narrow Metrics column (`models show` and enter give the full ones).
SHORT_METRIC_NAMES = {"perplexity": "ppl", "eval_perplexity": "ppl", "eval_loss": "loss"}


class ModelsPane(TablePane):
    COLUMNS = ("Version", "Size", "Parent", "Metrics", "Aliases", "Serving on")
    FLEX_COLUMN = 3
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
            self.show_message("no models yet: `modeldeck import PATH --name NAME` or `modeldeck demo`")
        else:
            self.show_message("")

    def cells(self, row: ModelRow) -> tuple:
        metrics = " ".join(f"{SHORT_METRIC_NAMES.get(key, key)}={value}"
                           for key, value in row.metrics[:METRICS_SHOWN])
        status = "" if row.status == "ready" else f" [{row.status}]"
        return (row.ref + status, fmt_bytes(row.size_bytes), row.parent or "-", metrics or "-",
                ",".join(row.aliases) or "-", ",".join(row.serving_on) or "-")

    def selected_row(self) -> ModelRow | None:
        return self.selected_item(self.panel.rows, lambda row: row.ref) if self.panel else None
