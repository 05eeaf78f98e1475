"""Jobs: fine-tune and compression jobs with progress bars, ETA and state."""

from __future__ import annotations

from console.data import JobRow, JobsPanel
from console.widgets.common import TablePane, bar, fmt_duration, matches, theme_colour


class JobsPane(TablePane):
    COLUMNS = ("Job", "Kind", "Model", "State", "Progress", "ETA")
    FLEX_COLUMN = 2
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
        else:
            self.show_message("")

    def cells(self, job: JobRow) -> tuple:
        progress = "-" if job.progress is None else f"{job.progress * 100:.0f}%"
        return (job.job_id, job.kind, job.model, job.state, bar(self, job.progress, progress, 8,
                    theme_colour(self, "primary", "blue")),
                fmt_duration(job.eta_s))

    def selected_job(self) -> JobRow | None:
        return self.selected_item(self.panel.jobs, lambda job: job.job_id) if self.panel else None
