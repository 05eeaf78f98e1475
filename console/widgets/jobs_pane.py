"""Jobs: fine-tune and compression jobs with progress bars, ETA and state.

Narrowing, the pane keeps a short job id, its state, progress and ETA, and drops the model,
then the kind (enter shows everything about the job)."""

from __future__ import annotations

from console import present
from console.data import JobRow, JobsPanel
from console.widgets.common import TablePane, bar_cell, fmt_duration, matches, theme_colour
from console.widgets.table import Column

PROGRESS_LABEL = 4  # "100%"


class JobsPane(TablePane):
    COLUMNS = (Column("Job"), Column("State"), Column("Progress", 1, stretch=1, max_width=40),
               Column("ETA", 2), Column("Kind", 3), Column("Model", 4, flex=True))
    PANE_TITLE = "Jobs"

    panel: JobsPanel | None

    def redraw(self) -> None:
        panel = self.panel
        if panel is None:
            return
        rows = [(job.job_id, self.cells(job)) for job in panel.jobs
                if matches(self.filter_text, (job.job_id, job.kind, job.model, job.state))]
        self.fill(rows)
        if panel.status != "ok":
            self.show_message(f"not available: {panel.reason}")
        elif not panel.jobs:
            self.show_message("no jobs yet (f fine-tunes, c compresses the selected version)")
        elif not rows:
            self.show_message(f"no job matches the filter '{self.filter_text}'")
        else:
            self.show_message("")

    def cells(self, job: JobRow) -> tuple:
        progress = bar_cell(self, job.progress, present.percent(job.progress), PROGRESS_LABEL,
                            theme_colour(self, "primary", "blue"))
        return (present.short_job_id(job.job_id), job.state, progress, fmt_duration(job.eta_s),
                job.kind, job.model or "-")

    def selected_job(self) -> JobRow | None:
        return self.selected_item(self.panel.jobs, lambda job: job.job_id) if self.panel else None
