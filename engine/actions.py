"""The verbs. One function per verb: the TUI key, the command palette and the headless CLI all
build the same request and call the same function here. Nothing is implemented twice.

Each verb validates its whole request before writing anything (BadInput -> exit 2) and records
an audit row for what it changed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.deck import Deck
from engine.errors import BadInput
from engine.registry.records import AuditEntry, Deployment, HistoryEntry, ModelRef, VersionInfo

# ---- registry verbs --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRequest:
    path: Path
    name: str
    allow_pickle: bool = False
    reason: str | None = None


def import_model(deck: Deck, request: ImportRequest) -> VersionInfo:
    from engine.registry.inspect import describe_source
    from engine.registry.records import check_name

    check_name("model name", request.name)
    source = Path(request.path).expanduser().resolve()
    description = describe_source(source, allow_pickle=request.allow_pickle)
    return deck.registry.register(
        request.name, description, produced_by="import", source=str(source),
        audit_verb="import",
        audit_arguments={"path": str(source), "name": request.name,
                         "allow_pickle": request.allow_pickle})


def list_models(deck: Deck, model: str | None = None) -> list[VersionInfo]:
    if model is not None and model not in deck.registry.model_names():
        raise BadInput(f"model {model!r} does not exist")
    return deck.registry.versions(model)


@dataclass(frozen=True)
class ModelDetails:
    version: VersionInfo
    deployed_on: tuple[str, ...]
    all_versions: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.version.to_dict(with_files=True), "deployed_on": list(self.deployed_on),
                "all_versions": list(self.all_versions)}


def show_model(deck: Deck, reference: str) -> ModelDetails:
    version = deck.registry.resolve(reference)
    deployed_on = tuple(d.target for d in deck.registry.deployments()
                        if (d.model, d.version) == (version.model, version.version))
    numbers = tuple(v.version for v in deck.registry.versions(version.model))
    return ModelDetails(version, deployed_on, numbers)


@dataclass(frozen=True)
class AliasRequest:
    reference: str
    alias: str


def alias_model(deck: Deck, request: AliasRequest) -> VersionInfo:
    version = deck.registry.resolve(request.reference)
    deck.registry.set_alias(version, request.alias)
    return deck.registry.resolve(version.ref)


# ---- deploy and roll back --------------------------------------------------------------------


@dataclass(frozen=True)
class DeployRequest:
    reference: str
    target: str = "local"
    reason: str | None = None
    force: bool = False
    # local target: start the embedded server when none runs (None: deck.toml's [serve] autostart)
    start_server: bool | None = None


@dataclass(frozen=True)
class RollbackRequest:
    target: str = "local"
    to: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DeployPlan:
    """What a deploy or rollback will change: shown before the user confirms."""

    action: str
    target: str
    current: Deployment | None
    chosen: VersionInfo

    @property
    def changes_anything(self) -> bool:
        """False when the target already points at the chosen version: active, or pending
        (local, moved while no server ran: the next server start gates it)."""
        settled = ("active", "pending") if self.target == "local" else ("active",)
        return not (self.current and self.current.state in settled
                    and (self.current.model, self.current.version)
                    == (self.chosen.model, self.chosen.version))

    def describe(self) -> str:
        before = self.current.ref if self.current else "nothing"
        return f"{self.action} {self.target}: {before} -> {self.chosen.ref}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target,
                "current": self.current.to_dict() if self.current else None,
                "chosen": self.chosen.to_dict(), "changes_anything": self.changes_anything}


@dataclass(frozen=True)
class DeployResult:
    plan: DeployPlan
    history: HistoryEntry | None  # None when nothing changed
    server: dict[str, Any] | None = None  # the local server afterwards (local target only)

    @property
    def changed(self) -> bool:
        return self.history is not None

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "changed": self.changed,
                "history": self.history.to_dict() if self.history else None, "server": self.server}


def _check_target(deck: Deck, target: str) -> None:
    if target not in deck.config.target_names:
        known = ", ".join(deck.config.target_names)
        raise BadInput(f"unknown target {target!r} (known: {known})")


def plan_deploy(deck: Deck, request: DeployRequest) -> DeployPlan:
    _check_target(deck, request.target)
    chosen = deck.registry.resolve(request.reference)
    if chosen.status == "rejected" and not request.force:
        raise BadInput(f"{chosen.ref} was rejected by its evaluation; pass --force to deploy it anyway")
    settings = deck.config.target(request.target)
    if settings is not None:  # refuse what the target kind cannot serve before asking to confirm
        from engine.targets.flow import driver_for

        driver_for(settings).validate(chosen)
    return DeployPlan("deploy", request.target, deck.registry.deployment(request.target), chosen)


def deploy(deck: Deck, request: DeployRequest) -> DeployResult:
    plan = plan_deploy(deck, request)
    local = request.target == "local"
    start = local and (deck.config.serve.autostart if request.start_server is None
                       else request.start_server)
    history = None
    arguments = {"ref": plan.chosen.ref, "target": request.target, "force": request.force}
    if plan.changes_anything or _pending_on_a_running_server(deck, plan):
        history = _move(deck, plan, request.reason, arguments, start)
    elif start:  # already deployed but maybe not served: deploying means serving it
        start_server(deck)  # a start gates a pending deployment; a running server is returned
    return DeployResult(plan, history, local_server_state(deck) if local else None)


def _pending_on_a_running_server(deck: Deck, plan: DeployPlan) -> bool:
    """Local still pending while a server runs (its deploy was killed mid-gate): deploying it
    again runs the gate again, as it would on any other target."""
    return (plan.target == "local" and plan.current is not None
            and plan.current.state == "pending" and local_server_state(deck)["state"] == "running")


def plan_rollback(deck: Deck, request: RollbackRequest) -> DeployPlan:
    _check_target(deck, request.target)
    current = deck.registry.deployment(request.target)
    if current is None:
        raise BadInput(f"target {request.target!r} has no deployment to roll back")
    if request.to is not None:
        chosen = deck.registry.resolve(_rollback_reference(current, request.to))
    else:
        chosen = _previous_version(deck, current)
    return DeployPlan("rollback", request.target, current, chosen)


def _rollback_reference(current: Deployment, to: str) -> ModelRef:
    """--to VERSION, ALIAS or MODEL@VERSION, always a version of the model the target serves:
    rolling back to another model is a deploy, and must say so (BadInput otherwise)."""
    if "@" in to:
        reference = ModelRef.parse(to)
        if reference.model != current.model:
            raise BadInput(f"--to {reference} is not a version of {current.model}, which "
                           f"{current.target!r} serves; rollback returns to an earlier version of "
                           f"the same model (to switch models, `modeldeck deploy {reference}`)")
        return reference
    if not to.strip():
        raise BadInput("--to needs a version number or an alias")
    return ModelRef(current.model, to.strip())


def _previous_version(deck: Deck, current: Deployment) -> VersionInfo:
    """What served before the current deployment (so two rollbacks toggle, like kubectl)."""
    entry = deck.registry.history_entry(current.history_id)
    if entry is None or entry.previous_model is None or entry.previous_version is None:
        raise BadInput(f"target {current.target!r} has no earlier deployment to roll back to")
    return deck.registry.resolve(ModelRef(entry.previous_model, str(entry.previous_version)))


def rollback(deck: Deck, request: RollbackRequest) -> DeployResult:
    plan = plan_rollback(deck, request)
    if not plan.changes_anything:
        return DeployResult(plan, None)
    arguments = {"target": request.target, "to": plan.chosen.ref}
    return DeployResult(plan, _move(deck, plan, request.reason, arguments))


def _last_good(deck: Deck, target: str) -> VersionInfo | None:
    """What the target last served successfully: the version a failed deploy returns to."""
    entries = deck.registry.history(target, limit=1000)
    good = next((entry for entry in entries if entry.outcome == "ok"), None)
    return deck.registry.resolve(ModelRef(good.model, str(good.version))) if good else None


def _move(deck: Deck, plan: DeployPlan, reason: str | None, arguments: dict[str, Any],
          start_server: bool = False) -> HistoryEntry:
    """Point the target at plan.chosen through the shared, gated flow (engine.targets.flow)."""
    current = _last_good(deck, plan.target)
    if plan.target == "local":
        from engine.serving.deploy import deliver_local  # gated hot swap when the server runs

        return deliver_local(deck, plan, reason, arguments, current, start_server)
    from engine.targets.flow import deliver

    return deliver(deck, plan.action, plan.target, plan.chosen, current, reason, arguments)


@dataclass(frozen=True)
class TargetSummary:
    name: str
    kind: str
    url: str | None
    serving: str | None
    state: str | None
    since: float | None
    secret_configured: bool  # whether a secret source is set; the secret itself is never shown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_targets(deck: Deck) -> list[TargetSummary]:
    deployments = {d.target: d for d in deck.registry.deployments()}
    summaries = [_summary("local", "local", local_server_state(deck).get("url"),
                          deck.config.serve.secret_configured, deployments.get("local"))]
    for target in deck.config.targets:
        summaries.append(_summary(target.name, target.kind, target.url or target.health_url,
                                  target.secret_configured, deployments.get(target.name)))
    return summaries


def _summary(name: str, kind: str, url: str | None, secret: bool,
             deployment: Deployment | None) -> TargetSummary:
    return TargetSummary(name, kind, url, deployment.ref if deployment else None,
                         deployment.state if deployment else None,
                         deployment.updated_at if deployment else None, secret)


def check_targets(deck: Deck) -> list[Any]:
    """Probe every target: the local server's state, and each remote driver's check()."""
    from engine.targets.base import TargetHealth
    from engine.targets.flow import driver_for

    server = local_server_state(deck)
    results = [TargetHealth("local", "local", server["state"] == "running",
                            f"server {server['state']}", {"url": server.get("url")})]
    for target in deck.config.targets:
        results.append(driver_for(target).check())
    return results

def history(deck: Deck, target: str | None = None, limit: int = 50) -> list[HistoryEntry]:
    if target is not None:
        _check_target(deck, target)
    return deck.registry.history(target, limit)


def audit(deck: Deck, limit: int = 50, verb: str | None = None) -> list[AuditEntry]:
    return deck.registry.audit(limit, verb)


# ---- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    home: str
    model_count: int
    version_count: int
    deployments: tuple[Deployment, ...]
    server: dict[str, Any] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)
    jobs: dict[str, int] = field(default_factory=dict)  # job counts by state
    warnings: tuple[str, ...] = ()  # e.g. the server is reachable from other machines without a key

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["deployments"] = [d.to_dict() for d in self.deployments]
        data["warnings"] = list(self.warnings)
        return data


def status(deck: Deck) -> StatusReport:
    """Cheap by design: no torch, no textual (a test checks the imports); deck.toml is validated
    (pydantic, about 100 ms) so a broken file fails here as it does everywhere else."""
    registry = deck.registry
    models, versions = registry.counts()
    server = local_server_state(deck)
    return StatusReport(home=str(deck.paths.home), model_count=models,
                        version_count=versions, deployments=tuple(registry.deployments()),
                        server=server, jobs=_job_counts(deck),
                        warnings=tuple(server.get("warnings", ())))


def _job_counts(deck: Deck) -> dict[str, int]:
    from engine.jobs import job_counts  # reads small state files only, no torch

    return job_counts(deck)


def local_server_state(deck: Deck) -> dict[str, Any]:
    """The embedded server's state from run/server.json: a missing or dead server is data.
    warnings: what a user must know about a running one (reachable from other machines with /v1
    open to anyone)."""
    from engine.procs import process_alive
    from engine.serving.runstate import read_server_info  # light: no torch

    info = read_server_info(deck.paths)
    if info is None:
        return {"state": "stopped", "pid": None, "url": None, "warnings": []}
    alive = process_alive(info.pid)
    return {"state": "running" if alive else "stale", "pid": info.pid, "url": info.url,
            "host": info.host, "api_key": info.api_key_set,
            "warnings": info.warnings if alive else []}


# ---- the local server -----------------------------------------------------------------------


def serve(deck: Deck, options: Any, on_ready: Any = None, on_warning: Any = None) -> None:
    """Serve the version deployed to `local` in this process until stopped (Ctrl-C, --stop).
    options: engine.serving.process.ServeOptions, the overrides of deck.toml's [serve]; on_ready(url,
    version) is called once the port is bound and the version loaded (a pending deployment gated);
    on_warning(text) for what the user must hear (no API key on a public address, a failed gate)."""
    from engine.serving.process import start_foreground

    server = start_foreground(deck, options)
    if on_warning is not None:
        for line in (*server.notes, *server.warnings):
            on_warning(line)
    if on_ready is not None:
        on_ready(server.url, server.host.active.ref if server.host.active else None)
    server.serve()


def start_server(deck: Deck, options: Any = None) -> dict[str, Any]:
    """Start the server detached (it outlives the terminal) and return its pid, url and warnings.
    options: engine.serving.process.ServeOptions; None: deck.toml's [serve] as it is, and any
    running server will do; given: a running server that differs in host, port or API key is
    refused (BadInput) rather than returned as if it were what was asked for."""
    from engine.serving.process import start_detached

    info = start_detached(deck, options)
    return {**info.to_dict(), "warnings": info.warnings}


def stop_server(deck: Deck) -> dict[str, Any]:
    from engine.serving.runstate import stop_server as stop

    stopped = stop(deck.paths)
    return {"stopped": stopped is not None, "pid": stopped.pid if stopped else None}


def rotate_control_token(deck: Deck) -> dict[str, Any]:
    """Replace the deck's control token. A running server reads the token file on each control
    request, so it accepts only the new token from now on, with no restart; copies of the old
    one (a remote deck's api_key_file) must be replaced. The token itself is never returned."""
    from engine.serving.runstate import TOKEN_FILE, rotate_control_token as rotate, running_server

    deck.paths.ensure()
    rotate(deck.paths)
    info = running_server(deck.paths)
    deck.registry.append_audit("rotate-token", {"target": "local"}, "ok")
    return {"rotated": True, "token_file": str(deck.paths.run / TOKEN_FILE),
            "server_running": info is not None, "pid": info.pid if info else None}


# ---- demo ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoResult:
    created: bool
    source: str
    version: VersionInfo | None

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "source": self.source,
                "version": self.version.to_dict() if self.version else None}


def demo(deck: Deck) -> DemoResult:
    """Fill an empty deck with a model that works offline, and deploy it to `local`."""
    from engine import demo as demo_models

    if deck.registry.model_names():
        return DemoResult(False, "existing deck", None)
    source_path, name, origin = demo_models.offline_demo_source(deck.paths)
    version = import_model(deck, ImportRequest(source_path, name, reason="demo"))
    # The pointer only: a demo must not leave a server running behind the user's back
    # (the console's `s` key or `modeldeck serve` starts it).
    deploy(deck, DeployRequest(version.ref, "local", reason="demo", start_server=False))
    return DemoResult(True, origin, deck.registry.resolve(version.ref))


# ---- compress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompressRequest:
    reference: str
    method: str | None = None  # None: deck.toml [compress] method
    options: dict[str, Any] = field(default_factory=dict)  # CompressSpec field names
    wait: bool = False


@dataclass(frozen=True)
class CompressResult:
    job: Any  # engine.jobs.JobInfo
    version: VersionInfo | None  # set once the job finished (always with wait=True)
    report: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job.to_dict(), "version": self.version.to_dict() if self.version else None,
                "report": self.report}


def compress(deck: Deck, request: CompressRequest, on_event: Any = None) -> CompressResult:
    """Start a compression job (validated first: nothing is written on bad input); with wait,
    follow its events (passed to on_event) until the new version is registered."""
    from engine import jobs
    from engine.compression.spec import parent_layer_count, spec_for
    from engine.errors import ActionFailed

    parent = deck.registry.resolve(request.reference)
    defaults = deck.config.compress  # deck.toml [compress]; the request's own options win
    options = {"max_ppl_increase": defaults.max_ppl_increase,
               **({"eval_file": str(defaults.eval_file)} if defaults.eval_file else {}),
               **request.options}
    config = next((deck.registry.blobs.path_of(f.sha256) for f in parent.files
                   if f.name == "config.json"), None)
    layers = parent_layer_count(config)
    spec = spec_for(parent.ref, parent.kind, parent.architecture,
                    request.method or defaults.method, options, layers)
    job = jobs.start_job(deck, "compress", spec.to_dict())
    if not request.wait:
        return CompressResult(job, None, None)
    for event in jobs.follow_events(deck, job.id, poll_s=0.2):
        if on_event is not None:
            on_event(event)
    job = jobs.get_job(deck, job.id)
    if job.state != "finished" or not job.result:
        raise ActionFailed(f"compress job {job.id} {job.state}: {job.reason}")
    return CompressResult(job, deck.registry.resolve(job.result["version"]), job.result["report"])


# ---- telemetry verbs: watch, endpoints list|check -------------------------------------------


@dataclass(frozen=True)
class EndpointInfo:
    """An endpoint as configured. Where its API key comes from is shown, never the key."""

    name: str
    kind: str
    url: str
    model: str | None
    verify_tls: bool
    timeout_s: float
    api_key_env: str | None
    api_key_file: str | None
    secret_configured: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_endpoints(deck: Deck) -> list[EndpointInfo]:
    return [EndpointInfo(e.name, e.kind, e.url, e.model, e.verify_tls, e.timeout_s, e.api_key_env,
                         str(e.api_key_file) if e.api_key_file else None, e.secret_configured)
            for e in deck.config.endpoints]


@dataclass(frozen=True)
class CheckEndpointsRequest:
    names: tuple[str, ...] = ()  # empty: every configured endpoint
    window_s: float = 0.0  # > 0: scrape twice this far apart, for rates and percentiles


@dataclass(frozen=True)
class EndpointsCheck:
    endpoints: tuple[Any, ...]  # engine.telemetry.EndpointSnapshot
    models: tuple[Any, ...]  # engine.telemetry.ModelStats

    @property
    def all_reachable(self) -> bool:
        return all(endpoint.status != "down" for endpoint in self.endpoints)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoints": [e.to_dict() for e in self.endpoints],
                "models": [m.to_dict() for m in self.models]}


def check_endpoints(deck: Deck, request: CheckEndpointsRequest) -> EndpointsCheck:
    """Probe and scrape endpoints concurrently; down ones are data in the result."""
    from engine.remote.poller import EndpointPoller

    configured = {e.name: e for e in deck.config.endpoints}
    unknown = [name for name in request.names if name not in configured]
    if unknown:
        raise BadInput(f"no endpoint named {unknown[0]!r} in deck.toml")
    if not 0 <= request.window_s <= 300:
        raise BadInput("--window must be between 0 and 300 seconds")
    chosen = [configured[name] for name in request.names] or list(configured.values())
    poller = EndpointPoller(chosen)
    try:
        snapshots = poller.poll_blocking()
        if request.window_s > 0 and chosen:  # nothing to measure: no reason to wait
            time.sleep(request.window_s)
            snapshots = poller.poll_blocking()
        return EndpointsCheck(snapshots, poller.models())
    finally:
        poller.close()


@dataclass(frozen=True)
class WatchRequest:
    interval_s: float | None = None  # None: [telemetry] interval_s
    count: int | None = None  # None: until interrupted
    gpu_replay: Path | None = None  # recorded NVML readings instead of NVML (tests, demos)
    remote: bool = True  # endpoints and Prometheus; False: this box only


def watch(deck: Deck, request: WatchRequest) -> Any:
    """Yield one TelemetrySnapshot per interval (a generator; stop by closing it)."""
    from engine.telemetry import build_sampler
    from engine.telemetry.gpu import ReplaySource

    if request.interval_s is not None and not 0.05 <= request.interval_s <= 3600:
        raise BadInput("--interval must be between 0.05 and 3600 seconds")
    if request.count is not None and request.count < 1:
        raise BadInput("--count must be at least 1")
    replay = None
    if request.gpu_replay is not None:
        try:
            replay = ReplaySource.from_file(request.gpu_replay)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise BadInput(f"cannot replay GPU readings from {request.gpu_replay}: {error}") from None
    return _watch_ticks(build_sampler(deck, replay, request.interval_s, request.remote),
                        request.count)


def _watch_ticks(sampler: Any, count: int | None) -> Any:
    with sampler:
        deadline = time.monotonic()
        number = 0
        while count is None or number < count:
            if number:
                deadline += sampler.interval_s
                time.sleep(max(0.0, deadline - time.monotonic()))
            yield sampler.tick()
            number += 1


# ---- fine-tuning jobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneRequest:
    reference: str
    data: Path
    overrides: dict[str, Any] = field(default_factory=dict)  # FinetuneSettings fields; None = unset
    config_file: Path | None = None
    on_bad_row: str = "error"
    keep_adapter: bool = False
    deploy_if_better: str | None = None
    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    node_rank: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class JobResult:
    job: Any  # engine.jobs.JobInfo
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job.to_dict(), **({"data": self.data} if self.data else {})}


def finetune(deck: Deck, request: FinetuneRequest) -> JobResult:
    """Validate everything (model, data, settings, target), then start the detached job."""
    from engine.jobs import JobLaunch, start_job
    from engine.training import preflight
    from engine.training.data import load_dataset
    from engine.training.settings import build_settings

    parent = deck.registry.resolve(request.reference)
    if parent.kind != "model":
        raise BadInput(f"{parent.ref} is an {parent.kind}, not a model; fine-tune its base instead")
    config = next((deck.registry.blobs.path_of(f.sha256) for f in parent.files
                   if f.name == "config.json"), None)
    parent_config = preflight.read_config(config)
    preflight.refuse_compressed(parent.ref, parent.lineage.get("parent"), parent_config)
    settings = build_settings(request.config_file, request.overrides, _deck_finetune_defaults(deck))
    preflight.check_eval_file(settings.eval_file)
    dataset = load_dataset(request.data, request.on_bad_row)
    eval_set = load_dataset(Path(settings.eval_file), request.on_bad_row) if settings.eval_file else None
    if request.keep_adapter and settings.method != "lora":
        raise BadInput("--keep-adapter only applies to --method lora")
    if request.deploy_if_better is not None:
        _check_target(deck, request.deploy_if_better)
    if request.nproc < 1 or request.nnodes < 1:
        raise BadInput("--nproc and --nnodes must be at least 1")
    if settings.method == "lora":
        preflight.check_lora_targets(config, settings.lora_targets)
    spec = {"parent": parent.ref, "model": parent.model, "data": str(dataset.path),
            "data_sha256": dataset.sha256, "format": dataset.format,
            "task": "classification" if dataset.format == "classification" else "causal-lm",
            "labels": list(dataset.labels), "on_bad_row": request.on_bad_row,
            "eval_data": str(eval_set.path) if eval_set else None,
            "eval_data_sha256": eval_set.sha256 if eval_set else None,
            "settings": settings.to_dict(), "keep_adapter": request.keep_adapter,
            "deploy_if_better": request.deploy_if_better, "reason": request.reason}
    launch = JobLaunch(request.nproc, request.nnodes, request.rdzv_endpoint, request.node_rank)
    job = start_job(deck, "finetune", spec, launch=launch)
    deck.registry.append_audit("finetune", {"job_id": job.id, "parent": parent.ref,
                                            "data": str(dataset.path), "method": settings.method},
                               "started", reason=request.reason)
    return JobResult(job, dataset.summary())


def _deck_finetune_defaults(deck: Deck) -> dict[str, Any]:
    """What deck.toml's [finetune] section sets explicitly (its unset defaults do not count)."""
    section = deck.config.finetune
    values = {name: getattr(section, name) for name in section.model_fields_set}
    if values.get("eval_file") is not None:
        values["eval_file"] = str(values["eval_file"])
    return values


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    reason: str | None = None


def list_jobs(deck: Deck, kind: str | None = None) -> list[Any]:
    from engine import jobs

    return jobs.list_jobs(deck, kind)


def show_job(deck: Deck, job_id: str) -> JobResult:
    from engine import jobs

    job = jobs.get_job(deck, job_id)
    events, _ = jobs.read_events(Path(job.directory))
    progress = [e for e in events if e.get("type") == "progress"]
    evals = [e for e in events if e.get("type") == "eval"]
    return JobResult(job, {"last_progress": progress[-1] if progress else None,
                           "last_eval": evals[-1] if evals else None,
                           "loss_curve": jobs.loss_curve(events)})


def cancel_job(deck: Deck, request: JobRequest) -> JobResult:
    from engine import jobs

    job = jobs.cancel_job(deck, request.job_id, request.reason or "cancelled by user")
    deck.registry.append_audit("cancel_job", {"job_id": job.id}, job.state, reason=request.reason)
    return JobResult(job)


def resume_job(deck: Deck, request: JobRequest) -> JobResult:
    from engine import jobs

    job = jobs.resume_job(deck, request.job_id)
    deck.registry.append_audit("resume_job", {"job_id": job.id, "attempt": job.attempt}, "started",
                               reason=request.reason)
    return JobResult(job)
