"""The dashboard's action keys: each builds the same request as the headless command and calls
the same engine verb (console.engine_calls), off the UI thread, and reports the outcome.

Deploy and roll back show the plan and ask first. check_action hides every action in
--readonly and dims the ones that make no sense for the current selection; `refusal` says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work

from console import engine_calls, present, present_jobs, present_live, present_models
from console.data import local_server_running
from console.screens.details import DetailsScreen
from console.screens.finetune_form import FinetuneForm
from console.screens.modals import ChoiceScreen, ConfirmScreen
from console.widgets.jobs_pane import JobsPane
from console.widgets.models_pane import EMPTY_DECK_HINT, ModelsPane

if TYPE_CHECKING:
    from textual.screen import Screen

    from console.data import Availability, RolloutView

    class _DashboardState(Screen):
        """What DashboardScreen gives the actions mixed into it (type checking only)."""

        readonly: bool
        availability: Availability
        targets: tuple[str, ...]
        follow_job: str | None

        def poll(self, name: str) -> None: ...

        def report(self, level: str, text: str, toast: bool = True,
                   audited: tuple[str, dict[str, str], float] | None = None) -> None: ...
else:
    _DashboardState = object

MUTATING = ("deploy", "rollback", "finetune", "compress", "cancel_job", "toggle_server",
            "rollout_pause", "rollout_abort", "stop_job", "checkpoint_job", "register_checkpoint")
TRAINING_ACTIONS = ("stop_job", "checkpoint_job", "register_checkpoint")  # on the selected job
ACTION_TITLES = {"deploy": "Deploy the selected version", "rollback": "Roll back a target",
                 "toggle_server": "Start or stop the local server",
                 "rollout_pause": "Rollout: pause/resume (local server)",
                 "rollout_abort": "Rollout: abort (local server)",
                 "finetune": "Fine-tune the selected version", "compress": "Compress the selected version",
                 "cancel_job": "Cancel the selected job",
                 "stop_job": "Stop the selected training job early (save, evaluate, register)",
                 "checkpoint_job": "Checkpoint the selected training job now",
                 "register_checkpoint": "Register a checkpoint of the selected job as a version",
                 "log_scale": "Toggle log scale of the loss plot",
                 "filter": "Filter rows", "pause": "Pause or resume refreshing",
                 "next_theme": "Next theme", "help": "Help: keys and what they need",
                 "quit": "Quit"}
NAVIGATION = (("tab / shift+tab", "move between panes"),
              ("↑ ↓  or  k j", "move the cursor one row"),
              ("pgup pgdn  or  ctrl+b ctrl+f", "move one page"),
              ("home end  or  g G", "first / last row"),
              ("enter", "details of the selected row"),
              ("esc", "clear the focused pane's filter; close a dialog"),
              ("ctrl+p", "command palette: every action and theme"))
READ_ONLY_REFUSAL = "read-only console (started with --readonly): actions are disabled"
NO_ROLLOUT = "no rollout is in progress on the local server (d offers one)"
GRADUAL = ("g", "Roll out gradually")
ROLLOUT_ACTIONS = ("rollout_pause", "rollout_abort")


class DashboardActions(_DashboardState):
    """Mixed into DashboardScreen; `self` is the screen."""

    def refusal(self, action: str) -> str | None:
        """Why `action` cannot run now, or None when it can."""
        if action in MUTATING and self.readonly:
            return getattr(self, "readonly_reason", READ_ONLY_REFUSAL)  # a replay says why
        models, jobs = self.query_one("#models"), self.query_one("#jobs")
        version = models.selected_row()  # type: ignore[attr-defined]
        empty_deck = models.panel is not None and not models.panel.rows  # type: ignore[attr-defined]
        if action in ("deploy", "finetune", "compress", "rollback", "toggle_server") and empty_deck:
            return EMPTY_DECK_HINT.replace("no models yet:", "the deck has no models yet: add one with")
        if action in ("deploy", "finetune", "compress") and version is None:
            return "select a model version first"
        if action == "rollback" and not (models.panel and models.panel.deployments):  # type: ignore[attr-defined]
            return "nothing is deployed, so there is nothing to roll back"
        if action == "toggle_server" and not self.local_server_running() and not any(
                d.target == "local" for d in (models.panel.deployments if models.panel else ())):  # type: ignore[attr-defined]
            return "nothing is deployed to local: deploy a version first"
        if action in ("rollout_pause", "rollout_abort") and self.local_rollout() is None:
            return NO_ROLLOUT
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
        if action in TRAINING_ACTIONS:
            return self.training_refusal(action, jobs.selected_job())  # type: ignore[attr-defined]
        return None

    def training_refusal(self, action: str, job: Any) -> str | None:
        if job is None:
            return "select a job first"
        if action == "register_checkpoint":
            return None if job.kind == "finetune" else "only fine-tuning checkpoints register"
        if job.kind not in ("finetune", "compress"):
            return f"job {job.job_id} is a {job.kind} job: it does not train"
        return None if job.state == "running" else f"job {job.job_id} is {job.state}, not running"

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in MUTATING and self.readonly:
            return False  # hidden in the footer and refused
        if action in ROLLOUT_ACTIONS and self.is_mounted and self.local_rollout() is None:
            return False  # footer room goes to keys that can act; help lists these with why
        if action in ACTION_TITLES and self.is_mounted:
            return None if self.refusal(action) else True
        return True

    def palette_run(self, action: str) -> None:
        """From the command palette: say why instead of doing nothing."""
        reason = self.refusal(action)
        if reason:
            self.notify(reason, severity="warning", timeout=4)
            return
        self.run_worker(self.run_action(action))

    # ---- deploy and roll back -------------------------------------------------------------------

    def action_deploy(self) -> None:
        if self.refusal("deploy") is None:
            self.deploy_flow(self.query_one("#models").selected_row().ref)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def deploy_flow(self, reference: str) -> None:
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
        changes = plan.describe()
        if target == "local" and deck.config.serve.autostart and not self.local_server_running():
            changes += "\nand start the local server (it is not running)"
        # A rollout runs inside the local server: offered while it runs.
        gradual = target == "local" and self.local_server_running()
        if gradual:
            changes += ("\n\ny: deploy now (all traffic at once)\ng: roll out gradually "
                        "(deck.toml [rollout] steps, behind latency and error gates)")
        answer = await self.app.push_screen_wait(ConfirmScreen(
            "Deploy?", changes, yes="Deploy now" if gradual else "Yes",
            alternative=GRADUAL if gradual else None))
        if answer == GRADUAL[0]:
            await self.apply_rollout(reference)
        elif answer:
            await self.apply_change(f"deploy {reference} to {target}",
                                    ("deploy", {"ref": reference, "target": target}),
                                    engine_calls.deploy, deck, reference, target)
        else:
            self.report("info", f"deploy {reference} to {target}: cancelled", toast=False)

    def action_rollback(self) -> None:
        if self.refusal("rollback") is None:
            self.rollback_flow()

    @work(exclusive=True, group="action")
    async def rollback_flow(self) -> None:
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
            await self.apply_change(f"rollback {target}", ("rollback", {"target": target}),
                                    engine_calls.rollback, deck, target)
        else:
            self.report("info", f"rollback {target}: cancelled", toast=False)

    async def apply_change(self, label: str,
                           audit: tuple[str, dict[str, str]], verb: Any, *args: Any) -> None:
        """Run a deploy or rollback; its outcome shows once (the audit's row replaces ours)."""
        began = time.time()
        try:
            result = await asyncio.to_thread(verb, *args)
        except Exception as error:  # a failed gate or a registry error: text in events + toast
            self.report("error", f"{label} failed: {error}", audited=(*audit, began))
        else:
            self.report("info", result.plan.describe() if result.changed
                        else f"{label}: nothing changed", audited=(*audit, began))
        self.poll("models")
        self.poll("events")

    # ---- rollouts on the local server ---------------------------------------------------------

    def local_rollout(self) -> "RolloutView | None":
        panel = self.query_one("#endpoints").panel  # type: ignore[attr-defined]
        return panel.rollout if panel is not None else None

    async def apply_rollout(self, reference: str) -> None:
        """`modeldeck rollout REF`: the eval gate, then the server ramps it up (or says why not)."""
        deck = self.app.deck  # type: ignore[attr-defined]
        self.notify(f"rollout {reference}: eval gate (perplexity of both versions)...", timeout=4)
        try:
            result = await asyncio.to_thread(engine_calls.start_rollout, deck, reference)
        except Exception as error:
            self.report("error", f"rollout {reference} failed: {error}")
        else:
            state = result.rollout or {}
            self.report("info", f"rollout {reference} started: {present_live.eval_verdict(result.eval)}"
                        f"; {state.get('message', '')}")
        self.poll("endpoints")
        self.poll("events")

    def action_rollout_pause(self) -> None:
        rollout = self.local_rollout()
        if self.refusal("rollout_pause") is None and rollout is not None:
            verb = "resume" if rollout.status == "paused" else "pause"
            self.rollout_flow(verb, rollout.candidate)

    def action_rollout_abort(self) -> None:
        rollout = self.local_rollout()
        if self.refusal("rollout_abort") is None and rollout is not None:
            self.rollout_flow("abort", rollout.candidate)

    @work(exclusive=True, group="action")
    async def rollout_flow(self, verb: str, candidate: str) -> None:
        if verb == "abort" and not await self.app.push_screen_wait(ConfirmScreen(
                "Abort the rollout?", f"abort the rollout of {candidate}: its weight goes back "
                "to 0 and it is unloaded; the live version serves all traffic")):
            self.report("info", f"abort rollout {candidate}: cancelled", toast=False)
            return
        try:
            result = await asyncio.to_thread(engine_calls.steer_rollout, self.app.deck, verb)  # type: ignore[attr-defined]
        except Exception as error:
            self.report("error", f"{verb} rollout {candidate} failed: {error}")
        else:
            state = result.rollout or {}
            self.report("info", f"rollout {candidate}: {state.get('status', verb)}"
                        f" ({state.get('message', '')})")
        self.poll("endpoints")
        self.poll("events")

    # ---- the local server -----------------------------------------------------------------------

    def local_server_running(self) -> bool:
        return local_server_running(self.query_one("#endpoints").panel)  # type: ignore[attr-defined]

    def action_toggle_server(self) -> None:
        if self.refusal("toggle_server") is None:
            self.server_flow()

    @work(exclusive=True, group="action")
    async def server_flow(self) -> None:
        deck = self.app.deck  # type: ignore[attr-defined]
        state = await asyncio.to_thread(engine_calls.server_state, deck)
        if state["state"] == "running":
            question = (f"stop the local server at {state['url']} (pid {state['pid']})\n"
                        "requests in flight are cut off")
            if not await self.app.push_screen_wait(ConfirmScreen("Stop the server?", question)):
                self.report("info", "stop local server: cancelled", toast=False)
                return
            label, verb = "stop local server", engine_calls.stop_server
        else:
            self.notify("starting the local server (loading the deployed version)...", timeout=4)
            label, verb = "start local server", engine_calls.start_server
        try:
            result = await asyncio.to_thread(verb, deck)
        except Exception as error:
            self.report("error", f"{label} failed: {error}")
        else:
            self.report("info", f"local server running at {result['url']} (pid {result['pid']})"
                        if "url" in result else f"local server stopped (pid {result['pid']})")
        self.poll("endpoints")

    # ---- fine-tune, compress, cancel -------------------------------------------------------------

    def action_finetune(self) -> None:
        if self.refusal("finetune") is None:
            self.finetune_flow(self.query_one("#models").selected_row().ref)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def finetune_flow(self, reference: str) -> None:
        deck = self.app.deck  # type: ignore[attr-defined]
        try:
            deck_defaults = await asyncio.to_thread(engine_calls.finetune_defaults, deck)
        except Exception as error:
            self.report("error", f"fine-tune {reference}: {error}")
            return
        values = await self.app.push_screen_wait(FinetuneForm(reference, deck_defaults))
        if values is None:
            return
        result = await self.start_job(f"fine-tune {reference}", "finetune", "FinetuneRequest",
                                      {**values, "reason": "console"},
                                      audit=("finetune", {"parent": reference}))
        job = getattr(result, "job", None)
        if job is not None:
            self.follow_job = job.id  # selected in Jobs (and so in Loss) once it is listed
            self.select_followed_job()

    def select_followed_job(self) -> None:
        """Put the Jobs cursor on the job this console just started, once the pane lists it;
        the Loss pane follows the Jobs selection."""
        job_id = self.follow_job
        table = self.query_one("#jobs", JobsPane).table
        if job_id is None or job_id not in table.row_keys:
            return
        self.follow_job = None
        table.move_cursor(table.row_keys.index(job_id))
        self.poll("loss")

    def action_compress(self) -> None:
        if self.refusal("compress") is None:
            self.compress_flow(self.query_one("#models").selected_row().ref)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def compress_flow(self, reference: str) -> None:
        methods = [(m, m) for m in self.availability.compress_methods]
        method = await self.app.push_screen_wait(ChoiceScreen(f"Compress {reference} how?", methods))
        if method is not None:
            values = {"reference": reference, "method": method}
            await self.start_job(f"compress {reference} ({method})", "compress", "CompressRequest", values)

    def action_cancel_job(self) -> None:
        if self.refusal("cancel_job") is None:
            self.cancel_flow(self.query_one("#jobs").selected_job().job_id)  # type: ignore[attr-defined]

    @work(exclusive=True, group="action")
    async def cancel_flow(self, job_id: str) -> None:
        if await self.app.push_screen_wait(ConfirmScreen("Cancel job?", f"cancel job {job_id}")):
            await self.start_job(f"cancel job {present.short_job_id(job_id)}", "cancel_job",
                                 "JobRequest",
                                 {"job_id": job_id, "reason": "cancelled from the console"},
                                 audit=("cancel_job", {"job_id": job_id}))

    def selected_job_id(self) -> str:
        return self.query_one("#jobs").selected_job().job_id  # type: ignore[attr-defined]

    def action_stop_job(self) -> None:
        if self.refusal("stop_job") is None:
            self.stop_flow(self.selected_job_id())

    @work(exclusive=True, group="action")
    async def stop_flow(self, job_id: str) -> None:
        changes = (f"job {job_id} finishes its current step, saves a checkpoint, evaluates "
                   "and registers its version now")
        if await self.app.push_screen_wait(ConfirmScreen("Stop early?", changes)):
            await self.start_job(f"stop job {present.short_job_id(job_id)} early", "stop_job",
                                 "JobRequest", {"job_id": job_id, "reason": "stopped from the console"},
                                 audit=("stop_job", {"job_id": job_id}))

    def action_checkpoint_job(self) -> None:
        if self.refusal("checkpoint_job") is None:
            job_id = self.selected_job_id()
            self.run_worker(self.start_job(f"checkpoint job {present.short_job_id(job_id)}",
                                           "checkpoint_job", "JobRequest", {"job_id": job_id},
                                           audit=("checkpoint_job", {"job_id": job_id})),
                            group="action", exclusive=True)

    def action_register_checkpoint(self) -> None:
        if self.refusal("register_checkpoint") is None:
            self.register_checkpoint_flow(self.selected_job_id())

    @work(exclusive=True, group="action")
    async def register_checkpoint_flow(self, job_id: str) -> None:
        """Pick a checkpoint (newest first, with its eval loss), then register it."""
        try:
            found = await asyncio.to_thread(_checkpoints_of, self.app.deck, job_id)  # type: ignore[attr-defined]
        except Exception as error:
            self.report("error", f"checkpoints of {job_id}: {error}")
            return
        if not found:
            self.report("warning", f"job {job_id} has no complete checkpoint yet")
            return
        choices = [(str(c["step"]), f"step {c['step']}  eval loss "
                    + (f"{c['eval_loss']:.4f}" if c["eval_loss"] is not None else "-"))
                   for c in found]
        step = await self.app.push_screen_wait(ChoiceScreen("Register which checkpoint?", choices))
        if step is None:
            return
        label = f"register checkpoint {step} of job {present.short_job_id(job_id)}"
        values = {"job_id": job_id, "step": int(step), "reason": "registered from the console"}
        try:
            result = await asyncio.to_thread(engine_calls.call_verb, self.app.deck,  # type: ignore[attr-defined]
                                             "register_checkpoint", "RegisterCheckpointRequest", values)
        except Exception as error:
            self.report("error", f"{label} failed: {error}")
        else:
            self.report("info", f"{label}: {result.data['version']}")
        self.poll("models")
        self.poll("events")

    async def start_job(self, label: str, verb: str, request_name: str,
                        values: dict[str, Any],
                        audit: tuple[str, dict[str, str]] | None = None) -> Any:
        deck = self.app.deck  # type: ignore[attr-defined]
        began = time.time()
        audited = (*audit, began) if audit is not None else None
        result = None
        try:
            result = await asyncio.to_thread(engine_calls.call_verb, deck, verb, request_name, values)
        except Exception as error:
            self.report("error", f"{label} failed: {error}", audited=audited)
        else:
            self.report("info", f"{label}: {engine_calls.describe_result(result)}",
                        audited=audited)
        self.poll("jobs")
        self.poll("events")
        return result

    # ---- details and help -------------------------------------------------------------------------

    def show_details(self, pane: Any) -> None:
        models = self.query_one("#models", ModelsPane)
        if pane is models and (row := models.selected_row()) is not None:
            self.model_details(row.ref)
            return
        for pane_id, getter, build in (("#jobs", "selected_job", present_jobs.job_details),
                                       ("#gpus", "selected_gpu", present_live.gpu_details),
                                       ("#endpoints", "selected_endpoint", present_live.endpoint_details),
                                       ("#events", "selected_event", present_live.event_details)):
            if pane is self.query_one(pane_id):
                item = getattr(pane, getter)()
                if item is not None:
                    self.app.push_screen(DetailsScreen(build(dataclasses.asdict(item))))
                return

    @work(exclusive=True, group="details")
    async def model_details(self, reference: str) -> None:
        try:
            data = await asyncio.to_thread(engine_calls.show_model, self.app.deck, reference)  # type: ignore[attr-defined]
        except Exception as error:
            self.report("error", f"details of {reference}: {error}")
            return
        self.app.push_screen(DetailsScreen(present_models.model_details(data)))

    def help_details(self) -> present.Details:
        rows = []
        for binding in self.BINDINGS:
            action = binding.action  # type: ignore[union-attr]
            if action not in ACTION_TITLES:
                continue
            if action in MUTATING and self.readonly:
                continue
            reason = self.refusal(action)
            rows.append((self.app.get_key_display(binding), ACTION_TITLES[action],  # type: ignore[arg-type]
                         f"unavailable: {reason}" if reason else ""))
        if not any(reason for _, _, reason in rows):
            rows = [row[:2] for row in rows]  # type: ignore[misc]
        headers = ("key", "action", "now")[:len(rows[0]) if rows else 2]
        sections = [present.Section("actions", headers=headers, rows=tuple(rows))]
        sections.append(present.Section("navigation", headers=("keys", "moves"),
                                         rows=tuple(NAVIGATION)))
        if self.readonly:
            sections.append(present.Section("read-only", pairs=(
                ("mode", getattr(self, "readonly_reason", READ_ONLY_REFUSAL)),)))
        return present.Details("modeldeck keys", tuple(sections))

    def help_text(self) -> str:
        return present.sections_text(self.help_details())


def _checkpoints_of(deck: Any, job_id: str) -> list[dict[str, Any]]:
    """Runs in a thread: the job's checkpoints, through the engine verb, on a fresh deck."""
    from console.sources import fresh_deck
    from engine import actions

    with fresh_deck(deck) as opened:
        return actions.list_checkpoints(opened, job_id)
