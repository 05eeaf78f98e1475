"""The dashboard's action keys: each builds the same request as the headless command and calls
the same engine verb (console.engine_calls), off the UI thread, and reports the outcome.

Deploy and roll back show the plan and ask first. check_action hides every action in
--readonly and dims the ones that make no sense for the current selection; `refusal` says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from textual import work

from console import engine_calls
from console.screens.modals import ChoiceScreen, ConfirmScreen, FormScreen, TextScreen, details_text

if TYPE_CHECKING:
    from console.screens.dashboard import DashboardScreen

MUTATING = ("deploy", "rollback", "finetune", "compress", "cancel_job")
ACTION_TITLES = {"deploy": "Deploy the selected version", "rollback": "Roll back a target",
                 "finetune": "Fine-tune the selected version", "compress": "Compress the selected version",
                 "cancel_job": "Cancel the selected job", "log_scale": "Toggle log scale of the loss plot",
                 "filter": "Filter rows", "pause": "Pause or resume refreshing",
                 "next_theme": "Next theme", "help": "Help: keys and what they need",
                 "quit": "Quit"}


class DashboardActions:
    """Mixed into DashboardScreen; `self` is the screen."""

    def refusal(self: "DashboardScreen", action: str) -> str | None:
        """Why `action` cannot run now, or None when it can."""
        if action in MUTATING and self.readonly:
            return "read-only console: actions are disabled"
        models, jobs = self.query_one("#models"), self.query_one("#jobs")
        version = models.selected_row()  # type: ignore[attr-defined]
        if action in ("deploy", "finetune", "compress") and version is None:
            return "select a model version first"
        if action == "rollback" and not (models.panel and models.panel.deployments):  # type: ignore[attr-defined]
            return "nothing is deployed, so there is nothing to roll back"
        if action == "finetune" and self.availability.finetune:
            return self.availability.finetune
        if action == "compress" and self.availability.compress:
            return self.availability.compress
        if action == "cancel_job":
            job = jobs.selected_job()  # type: ignore[attr-defined]
            if self.availability.cancel:
                return self.availability.cancel
            if job is None:
                return "select a job first"
            if not job.cancellable:
                return f"job {job.job_id} is {job.state}: nothing to cancel"
        return None

    def check_action(self: "DashboardScreen", action: str, parameters: tuple) -> bool | None:
        if action in MUTATING and self.readonly:
            return False  # hidden in the footer and refused
        if action in ACTION_TITLES and self.is_mounted:
            return None if self.refusal(action) else True
        return True

    def palette_run(self: "DashboardScreen", action: str) -> None:
        """From the command palette: say why instead of doing nothing."""
        reason = self.refusal(action)
        if reason:
            self.notify(reason, severity="warning", timeout=4)
            return
        self.run_worker(self.run_action(action))

    # ---- deploy and roll back -------------------------------------------------------------------

    def action_deploy(self: "DashboardScreen") -> None:
        if self.refusal("deploy") is None:
            self.deploy_flow(self.query_one("#models").selected_row().ref)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def deploy_flow(self: "DashboardScreen", reference: str) -> None:
        target = await self.app.push_screen_wait(
            ChoiceScreen(f"Deploy {reference} to which target?", [(t, t) for t in self.targets]))
        if target is None:
            return
        deck = self.app.deck  # type: ignore[attr-defined]
        try:
            plan = await asyncio.to_thread(engine_calls.plan_deploy, deck, reference, target)
        except Exception as error:
            self.report("error", f"deploy {reference} to {target}: {error}")
            return
        if not plan.changes_anything:
            self.report("info", f"{target} already serves {reference}: nothing to change")
            return
        if await self.app.push_screen_wait(ConfirmScreen("Deploy?", plan.describe())):
            await self.apply_change(f"deploy {reference} to {target}", engine_calls.deploy,
                                    deck, reference, target)
        else:
            self.report("info", f"deploy {reference} to {target}: cancelled", toast=False)

    def action_rollback(self: "DashboardScreen") -> None:
        if self.refusal("rollback") is None:
            self.rollback_flow()

    @work(exclusive=True, group="action")
    async def rollback_flow(self: "DashboardScreen") -> None:
        deployments = self.query_one("#models").panel.deployments  # type: ignore[attr-defined]
        choices = [(d.target, f"{d.target}  (serves {d.ref})") for d in deployments]
        target = await self.app.push_screen_wait(ChoiceScreen("Roll back which target?", choices))
        if target is None:
            return
        deck = self.app.deck  # type: ignore[attr-defined]
        try:
            plan = await asyncio.to_thread(engine_calls.plan_rollback, deck, target)
        except Exception as error:
            self.report("error", f"rollback {target}: {error}")
            return
        if await self.app.push_screen_wait(ConfirmScreen("Roll back?", plan.describe())):
            await self.apply_change(f"rollback {target}", engine_calls.rollback, deck, target)
        else:
            self.report("info", f"rollback {target}: cancelled", toast=False)

    async def apply_change(self: "DashboardScreen", label: str, verb: Any, *args: Any) -> None:
        try:
            result = await asyncio.to_thread(verb, *args)
        except Exception as error:  # a failed gate or a registry error: text in events + toast
            self.report("error", f"{label} failed: {error}")
        else:
            self.report("info", f"{label}: {result.plan.describe()}" if result.changed
                        else f"{label}: nothing changed")
        self.poll("models")
        self.poll("events")

    # ---- fine-tune, compress, cancel -------------------------------------------------------------

    def action_finetune(self: "DashboardScreen") -> None:
        if self.refusal("finetune") is None:
            self.finetune_flow(self.query_one("#models").selected_row().ref)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def finetune_flow(self: "DashboardScreen", reference: str) -> None:
        fields = form_fields("FinetuneRequest", reference, self.app.deck.config.finetune)  # type: ignore[attr-defined]
        values = await self.app.push_screen_wait(FormScreen(f"Fine-tune {reference}", fields))
        if values is not None:
            await self.start_job(f"fine-tune {reference}", "finetune", "FinetuneRequest",
                                 typed_values("FinetuneRequest", values))

    def action_compress(self: "DashboardScreen") -> None:
        if self.refusal("compress") is None:
            self.compress_flow(self.query_one("#models").selected_row().ref)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def compress_flow(self: "DashboardScreen", reference: str) -> None:
        methods = [(m, m) for m in self.availability.compress_methods]
        method = await self.app.push_screen_wait(ChoiceScreen(f"Compress {reference} how?", methods))
        if method is not None:
            values = {"reference": reference, "ref": reference, "method": method}
            await self.start_job(f"compress {reference} ({method})", "compress", "CompressRequest", values)

    def action_cancel_job(self: "DashboardScreen") -> None:
        if self.refusal("cancel_job") is None:
            self.cancel_flow(self.query_one("#jobs").selected_job().job_id)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def cancel_flow(self: "DashboardScreen", job_id: str) -> None:
        if await self.app.push_screen_wait(ConfirmScreen("Cancel job?", f"cancel job {job_id}")):
            await self.start_job(f"cancel {job_id}", "cancel_job", "CancelRequest",
                                 {"job_id": job_id, "id": job_id})

    async def start_job(self: "DashboardScreen", label: str, verb: str, request_name: str,
                        values: dict[str, Any]) -> None:
        deck = self.app.deck  # type: ignore[attr-defined]
        try:
            result = await asyncio.to_thread(engine_calls.call_verb, deck, verb, request_name, values)
        except Exception as error:
            self.report("error", f"{label} failed: {error}")
        else:
            self.report("info", f"{label}: {engine_calls.describe_result(result)}")
        self.poll("jobs")
        self.poll("events")

    # ---- details and help -------------------------------------------------------------------------

    def show_details(self: "DashboardScreen", pane: Any) -> None:
        if pane is self.query_one("#models") and pane.selected_row() is not None:
            self.model_details(pane.selected_row().ref)
            return
        for pane_id, getter in (("#jobs", "selected_job"), ("#gpus", "selected_gpu")):
            if pane is self.query_one(pane_id) and getattr(pane, getter)() is not None:
                item = getattr(pane, getter)()
                self.app.push_screen(TextScreen(f"{pane.border_title} details",
                                                details_text(item.__dict__)))

    @work(exclusive=True, group="details")
    async def model_details(self: "DashboardScreen", reference: str) -> None:
        try:
            data = await asyncio.to_thread(engine_calls.show_model, self.app.deck, reference)  # type: ignore[attr-defined]
        except Exception as error:
            self.report("error", f"details of {reference}: {error}")
            return
        data.pop("files", None)
        self.app.push_screen(TextScreen(f"{reference}", details_text(data)))

    def help_text(self: "DashboardScreen") -> str:
        lines = []
        for binding in self.BINDINGS:
            action = binding.action  # type: ignore[union-attr]
            if action not in ACTION_TITLES:
                continue
            reason = self.refusal(action)
            state = f"  (unavailable: {reason})" if reason else ""
            lines.append(f"{binding.key_display or binding.key:>6}  {ACTION_TITLES[action]}{state}")  # type: ignore[union-attr]
        lines += ["   tab  Move between panes", " enter  Details of the selected row",
                  "ctrl+p  Command palette (every action)"]
        return "\n".join(lines)


def form_fields(request_name: str, reference: str, settings: Any) -> list[tuple[str, str, str]]:
    """The request's fields, prefilled from deck.toml's section and the selected version."""
    fields = []
    for field in engine_calls.request_fields(request_name):
        if field.name in ("reference", "ref", "base", "model"):
            value: Any = reference
        else:
            value = getattr(settings, field.name, None)
            if value is None and field.default is not dataclasses.MISSING:
                value = field.default
        shown = ",".join(value) if isinstance(value, tuple) else ("" if value is None else str(value))
        fields.append((field.name, field.name.replace("_", " "), shown))
    return fields


def typed_values(request_name: str, values: dict[str, str]) -> dict[str, Any]:
    """Form strings -> the request's field types (empty means the request's default)."""
    typed: dict[str, Any] = {}
    for field in engine_calls.request_fields(request_name):
        text = values.get(field.name, "").strip()
        if not text:
            continue
        kind = str(field.type)
        if "tuple" in kind:
            typed[field.name] = tuple(part.strip() for part in text.split(",") if part.strip())
        elif "bool" in kind:
            typed[field.name] = text.lower() in ("1", "true", "yes", "on")
        elif "int" in kind and "float" not in kind:
            typed[field.name] = int(text)
        elif "float" in kind:
            typed[field.name] = float(text)
        elif "Path" in kind:
            from pathlib import Path

            typed[field.name] = Path(text).expanduser()
        else:
            typed[field.name] = text
    return typed
