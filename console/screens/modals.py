"""Modal dialogs: confirm, and choose one of a list (the fine-tune form: finetune_form.py;
details and help: details.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Key
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool | str]):
    """Shows what will change and asks; y/enter confirms, n/escape cancels. `alternative`
    (key, label) offers a second way to go ahead (deploy: roll out gradually): its key
    dismisses with that key instead of True."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", id="confirm-yes"),
                Binding("n", "answer(False)", "No", id="confirm-no"),
                Binding("escape", "answer(False)", "Cancel", show=False)]

    def __init__(self, title: str, changes: str, yes: str = "Yes",
                 alternative: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.title_text, self.changes, self.yes = title, changes, yes
        self.alternative = alternative

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.changes, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="primary")
                if self.alternative is not None:
                    key, label = self.alternative
                    yield Button(f"{label} ({key})", id=f"alternative-{key}")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe answer has the focus

    def on_key(self, event: Key) -> None:
        if self.alternative is not None and event.key == self.alternative[0]:
            event.stop()
            self.dismiss(self.alternative[0])

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = str(event.button.id)
        self.dismiss(button.removeprefix("alternative-") if button.startswith("alternative-")
                     else button == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one item (a target, a method) with the arrows and enter; escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, choices: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text, self.choices = title, list(choices)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*(Option(label, id=value) for value, label in self.choices))

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
