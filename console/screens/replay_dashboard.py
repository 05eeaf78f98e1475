"""The dashboard over a recording (`modeldeck tui --replay FILE`): the same panes, read-only,
with playback keys, a status line (the frame's time, position, speed, paused or playing) and a
seek field. The data comes from console.recording.RecordingSource."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from console import present
from console.recording import REPLAY_REFUSAL, SPEEDS, RecordingSource
from console.screens.dashboard import POLLED, DashboardScreen
from console.widgets.footer import DeckFooter
from engine.errors import BadInput

STATUS_EVERY_S = 0.25  # the status line's clock; the panes follow when the frame changes
FRAME_POLLED = tuple(name for name in POLLED if name != "deck_info")
REPLAY_KEYS = (("space", "play / pause"), (". ,", "one frame on / back (pauses)"),
               (":", "seek: HH:MM[:SS], +SECONDS from the start, -SECONDS from the end"),
               ("+ -", "twice / half the speed (1x to 64x)"), ("1 2 4 8", "that speed"))


class ReplayDashboard(DashboardScreen):
    DEFAULT_CSS = """
    ReplayDashboard #replay-status {
        height: 1;
        background: $boost;
        color: $text;
    }
    ReplayDashboard #seek {
        dock: bottom;
        display: none;
        height: 3;
    }
    ReplayDashboard #seek.visible {
        display: block;
    }
    """
    BINDINGS = [
        Binding("space", "replay_toggle", "Play/pause", id="replay-toggle"),
        Binding("full_stop", "replay_step(1)", "Step", id="replay-step"),
        Binding("comma", "replay_step(-1)", "Back", id="replay-back"),
        Binding("colon", "replay_seek", "Seek", id="replay-seek"),
        Binding("plus,equals_sign", "replay_speed(2.0)", "Faster", id="replay-faster"),
        Binding("minus", "replay_speed(0.5)", "Slower", id="replay-slower"),
        *(Binding(str(int(speed)), f"replay_set_speed({speed})", f"{speed:g}x", show=False)
          for speed in SPEEDS[:4]),
    ]

    def __init__(self, source: RecordingSource, refresh_s: float,
                 startup_warnings: tuple[str, ...] = ()) -> None:
        super().__init__(source, refresh_s, True, startup_warnings)
        self.recording_source = source
        self.readonly_reason = REPLAY_REFUSAL
        self.shown_index = -1

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, DeckFooter):
                yield Static(self.recording_source.status_line(), id="replay-status")
                yield Input(placeholder="seek to HH:MM[:SS], +SECONDS from the start, -SECONDS "
                                        "from the end (enter seeks, esc closes)", id="seek")
            yield widget

    def on_mount(self) -> None:
        super().on_mount()
        self.shown_index = self.recording_source.index()
        self.set_interval(STATUS_EVERY_S, self.follow_playback)

    def follow_playback(self) -> None:
        """The status line now; the panes when the frame changed (the playback moved)."""
        self.query_one("#replay-status", Static).update(self.recording_source.status_line())
        index = self.recording_source.index()
        if index != self.shown_index:
            self.shown_index = index
            for name in FRAME_POLLED:
                self.poll(name)

    def help_details(self) -> present.Details:
        """The dashboard's help, and the playback keys."""
        details = super().help_details()
        keys = present.Section("replay", headers=("keys", "does"), rows=REPLAY_KEYS)
        return present.Details(details.title, (keys, *details.sections))

    def action_replay_toggle(self) -> None:
        self.recording_source.playback.toggle()
        self.follow_playback()

    def action_replay_step(self, frames: int) -> None:
        self.recording_source.playback.step(frames)
        self.follow_playback()

    def action_replay_speed(self, factor: float) -> None:
        playback = self.recording_source.playback
        playback.set_speed(playback.speed * factor)
        self.follow_playback()

    def action_replay_set_speed(self, speed: float) -> None:
        self.recording_source.playback.set_speed(speed)
        self.follow_playback()

    def action_replay_seek(self) -> None:
        field = self.query_one("#seek", Input)
        field.value = ""
        field.add_class("visible")
        field.focus()

    def close_seek(self) -> None:
        field = self.query_one("#seek", Input)
        field.remove_class("visible")
        self.focused_pane().table.focus()

    def action_clear_filter(self) -> None:
        if self.query_one("#seek", Input).has_focus:
            self.close_seek()
        else:
            super().action_clear_filter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "seek":
            super().on_input_submitted(event)
            return
        try:
            self.recording_source.seek(event.value)
        except BadInput as error:
            self.notify(str(error), title="seek", severity="warning", timeout=5)
            return
        self.close_seek()
        self.follow_playback()
