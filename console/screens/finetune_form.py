"""The fine-tune form (`f`): the settings of engine/finetune_settings.py, prefilled with what a
fine-tune would use (deck.toml's [finetune], else the schema's defaults).

The form sends only what the user changed: everything else the engine takes from deck.toml
itself, exactly as `modeldeck finetune` does, so the console and the CLI build the same request
for the same deck.toml (tests/console/test_finetune_form.py). Errors are shown inside the form,
which stays open with what was typed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from engine.finetune_settings import (DEFAULT_LR, DEVICE_CHOICES, METHODS, SCHEDULERS,
                                      FinetuneSettings, build_settings)


@dataclass(frozen=True)
class FormField:
    name: str  # a FinetuneRequest field, or a setting of the schema
    label: str
    kind: type = str  # how the text becomes a value
    choices: tuple[str, ...] = ()  # a Select instead of an Input


STEPS_HELP = ("steps: a fixed number of optimizer steps; epochs: passes over the data. "
              "When both are set, steps wins.")
FIELDS = (
    FormField("data", "training data (a .jsonl, .txt or .csv file)"),
    FormField("method", "method", choices=METHODS),
    FormField("steps", "steps (empty: train by epochs)", int),
    FormField("epochs", "epochs (used when steps is empty)", float),
    FormField("learning_rate", "learning rate (empty: "
              + ", ".join(f"{rate:g} {method}" for method, rate in DEFAULT_LR.items()) + ")", float),
    FormField("lr_scheduler", "learning-rate schedule", choices=SCHEDULERS),
    FormField("batch_size", "batch size", int),
    FormField("max_length", "max length (tokens per example)", int),
    FormField("lora_rank", "LoRA rank", int),
    FormField("lora_alpha", "LoRA alpha", int),
    FormField("eval_split", "eval split (share held out)", float),
    FormField("device", "device", choices=DEVICE_CHOICES),
    FormField("deploy_if_better", "deploy to this target if it beats its parent (empty: no)"),
)
BY_NAME = {field.name: field for field in FIELDS}
REQUEST_FIELDS = ("data", "deploy_if_better")  # FinetuneRequest's own; the rest are settings


def initial_values(deck_defaults: dict[str, Any]) -> dict[str, str]:
    """What each field shows first: deck.toml's [finetune] value, else the schema's default.
    The learning rate stays empty unless deck.toml sets it: its default depends on the method."""
    defaults = vars(FinetuneSettings())
    shown = {}
    for field in FIELDS:
        value = deck_defaults.get(field.name, defaults.get(field.name))
        shown[field.name] = "" if value is None else str(value)
    if "epochs" not in deck_defaults and "steps" not in deck_defaults:
        shown["epochs"] = "1.0"  # the schema's "neither" means one epoch
    return shown


def request_values(reference: str, typed: dict[str, str],
                   initial: dict[str, str]) -> dict[str, Any]:
    """FinetuneRequest fields from the form: the data file, the target, and the settings the
    user changed (ValueError naming the field when one is not a number)."""
    data = typed.get("data", "").strip()
    if not data:
        raise ValueError("data: the training data file is required")
    overrides: dict[str, Any] = {}
    for field in FIELDS:
        text = typed.get(field.name, "").strip()
        if field.name in REQUEST_FIELDS or text == initial.get(field.name, "").strip():
            continue
        overrides[field.name] = _typed(field, text) if text else None
    if overrides.get("steps") is None and "steps" in overrides:
        del overrides["steps"]  # emptied: train by epochs (an epochs value below still counts)
        overrides.setdefault("epochs", _typed(BY_NAME["epochs"], typed.get("epochs", "").strip() or "1"))
    overrides = {name: value for name, value in overrides.items() if value is not None}
    return {"reference": reference, "data": Path(data).expanduser(), "overrides": overrides,
            "deploy_if_better": typed.get("deploy_if_better", "").strip() or None}


def _typed(field: FormField, text: str) -> Any:
    try:
        return field.kind(text)
    except ValueError:
        raise ValueError(f"{field.name.replace('_', ' ')}: {text!r} is not a number") from None


def check_values(values: dict[str, Any], deck_defaults: dict[str, Any]) -> None:
    """What can be checked without torch or the data: the file exists, the settings pass the
    schema's checks on top of deck.toml's (the verb checks the rest when it starts the job)."""
    data = Path(values["data"])
    if not data.is_file():
        raise ValueError(f"data: no file at {data}")
    settings = build_settings(None, values["overrides"], deck_defaults, check_machine=False)
    del settings


class FinetuneForm(ModalScreen[dict[str, Any] | None]):
    """The form; dismisses with FinetuneRequest values once they pass `check`, else shows why
    under the fields and keeps what was typed. ctrl+s starts, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Start")]

    def __init__(self, reference: str, deck_defaults: dict[str, Any],
                 check: Callable[[dict[str, Any], dict[str, Any]], None] = check_values) -> None:
        super().__init__()
        self.reference, self.deck_defaults, self.check = reference, deck_defaults, check
        self.initial = initial_values(deck_defaults)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide"):
            yield Label(f"Fine-tune {self.reference}", classes="dialog-title")
            yield Static(STEPS_HELP, classes="dialog-body")
            with VerticalScroll(classes="form-fields"):
                for field in FIELDS:
                    yield Label(field.label)
                    yield self._widget(field)
            yield Static("", id="form-error", classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (ctrl+s)", id="start", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def _widget(self, field: FormField) -> Input | Select[str]:
        value = self.initial[field.name]
        if field.choices:
            options = list(field.choices) + ([value] if value and value not in field.choices else [])
            return Select([(choice, choice) for choice in options], value=value or options[0],
                          allow_blank=False, id=f"field-{field.name}")
        # select_on_focus off: tabbing into a field and typing edits the value, not replaces it
        return Input(value, id=f"field-{field.name}", select_on_focus=False)

    def on_mount(self) -> None:
        self.query_one("#field-data", Input).focus()

    def typed(self) -> dict[str, str]:
        values = {}
        for field in FIELDS:
            widget = self.query_one(f"#field-{field.name}")
            values[field.name] = str(widget.value) if isinstance(widget, (Input, Select)) else ""
        return values

    def action_submit(self) -> None:
        try:
            values = request_values(self.reference, self.typed(), self.initial)
            self.check(values, self.deck_defaults)
        except Exception as error:  # noqa: BLE001 - every refusal is shown, the form stays
            self.query_one("#form-error", Static).update(f"not started: {error}")
            return
        self.dismiss(values)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
