"""The Loss pane's keys on the dashboard: signal, second signal, smoothing, x axis, baseline.

Mixed into DashboardScreen (before DashboardActions). Each key only changes what the pane shows;
nothing here writes anything, so none of them is refused in --readonly. Pinning a baseline reads
the other job's series in a thread worker, as every poll does; the loss poll then reads both."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from textual import work
from textual.binding import Binding

from console import present
from console.data import baseline_candidates, signal_info
from console.screens.modals import ChoiceScreen
from console.widgets.loss_pane import LossPane, LossRuns
from console.widgets.loss_plot import AXIS_LABELS, SMOOTHING_WORDS

if TYPE_CHECKING:
    from textual.screen import Screen

    class _Dashboard(Screen):
        source: Any

        def loss_job_id(self) -> str | None: ...

        def read_in_thread(self, name: str, reader: Callable[[], Any]) -> None: ...
else:
    _Dashboard = object

# Not in the footer (its room goes to the action keys); help (?) and the palette list them.
LOSS_BINDINGS = [
    Binding("m", "loss_signal", "Signal", show=False, id="loss-signal"),
    Binding("n", "loss_second", "Second signal", show=False, id="loss-second"),
    Binding("e", "loss_smoothing", "Smoothing", show=False, id="loss-smoothing"),
    Binding("b", "loss_baseline", "Baseline", show=False, id="loss-baseline"),
    Binding("w", "loss_axis", "X axis", show=False, id="loss-axis"),
]
LOSS_KEYS = (("m", "Loss: next signal (train/eval loss, learning rate, grad norm, tokens/s, ...)"),
             ("n", "Loss: a second signal on the right axis (cycles; then none)"),
             ("e", "Loss: smoothing: EMA, time-weighted EMA, raw"),
             ("b", "Loss: pin another run of the model family as a baseline, or unpin it"),
             ("w", "Loss: x axis: step, tokens seen, wall time"),
             ("l", "Loss: log scale of the y axis"))
NO_DATA = "the Loss pane has no job's signals yet"
UNPIN = "__unpin__"


def read_runs(source: Any, job_id: str | None, baseline_id: str | None) -> LossRuns:
    """Runs in a poll's thread: the job shown and, when pinned, the baseline run."""
    series = source.loss(job_id)
    baseline = None
    if baseline_id and baseline_id != series.job_id:
        baseline = source.loss(baseline_id)
    return LossRuns(series, baseline)


class LossKeys(_Dashboard):
    """Mixed into DashboardScreen; `self` is the screen."""

    def loss_pane(self) -> LossPane:
        return self.query_one("#loss", LossPane)

    def loss_reader(self) -> Callable[[], LossRuns]:
        return partial(read_runs, self.source, self.loss_job_id(), self.loss_pane().baseline_id)

    def say(self, text: str) -> None:
        self.notify(text, timeout=2)

    def action_loss_signal(self) -> None:
        pane = self.loss_pane()
        if not pane.series.signal_names:
            self.say(NO_DATA)
            return
        self.say(f"loss pane: {signal_info(pane.next_signal()).words}")

    def action_loss_second(self) -> None:
        pane = self.loss_pane()
        if not pane.series.signal_names:
            self.say(NO_DATA)
            return
        second = pane.next_second()
        self.say(f"loss pane: {signal_info(second).words} on the right axis" if second
                 else "loss pane: one signal")

    def action_loss_smoothing(self) -> None:
        self.say(f"loss pane smoothing: {SMOOTHING_WORDS[self.loss_pane().next_smoothing()]}")

    def action_loss_axis(self) -> None:
        self.say(f"loss pane x axis: {AXIS_LABELS[self.loss_pane().next_axis()]}")

    def action_loss_baseline(self) -> None:
        self.choose_baseline()

    def loss_set(self, **changes: Any) -> None:
        """From the palette: one field of the view, as its key would set it."""
        pane = self.loss_pane()
        pane.set_view(**changes)

    @work(exclusive=True, group="loss-baseline")
    async def choose_baseline(self) -> None:
        pane = self.loss_pane()
        jobs, models = self.query_one("#jobs"), self.query_one("#models")
        shown = pane.series.job_id
        candidates = baseline_candidates(jobs.panel, models.panel, shown)  # type: ignore[attr-defined]
        choices = [(job.job_id, baseline_label(job)) for job in candidates]
        if pane.baseline_id:
            choices.insert(0, (UNPIN, f"unpin {present.short_job_id(pane.baseline_id)}"))
        if not choices:
            self.notify("no other running or finished job of this model family to compare with",
                        severity="warning", timeout=4)
            return
        family = next((job.model for job in jobs.panel.jobs if job.job_id == shown), "")  # type: ignore[attr-defined]
        title = f"Compare with which run{' of ' + family if family else ''}?"
        chosen = await self.app.push_screen_wait(ChoiceScreen(title, choices))
        if chosen is not None:
            self.pin_baseline(None if chosen == UNPIN else chosen)

    def pin_baseline(self, job_id: str | None) -> None:
        pane = self.loss_pane()
        pane.pin(job_id)
        if job_id is None:
            self.say("loss pane: baseline unpinned")
            return
        self.say(f"loss pane: comparing with {present.short_job_id(job_id)}")
        reader = partial(self.source.loss, job_id)
        self.run_worker(partial(self.read_in_thread, "baseline", reader), thread=True,
                        group="poll-baseline", exit_on_error=False)

    def show_baseline(self, value: Any, error: str | None) -> None:
        reason = error or (value.reason if value is not None and value.status != "ok" else None)
        if reason:  # the pin stays: a later loss poll may read it
            self.notify(f"baseline: {reason}", severity="error", timeout=4)
        else:
            self.loss_pane().show_baseline(value)

    def help_details(self) -> present.Details:
        details = super().help_details()  # type: ignore[misc]
        section = present.Section("loss pane", headers=("key", "shows"), rows=LOSS_KEYS)
        sections = list(details.sections)
        sections.insert(1, section)
        return replace(details, sections=tuple(sections))


def baseline_label(job: Any) -> str:
    return f"{present.short_job_id(job.job_id)}  {job.kind}  {job.model}  {job.state}"
