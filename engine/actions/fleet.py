"""Fleet verbs: status and watch of every `[[hosts]]` host, and deploys and rollbacks that move
hosts one at a time over ssh.

A fleet deploy pushes NAME@VERSION to each host that lacks it with the same content-addressed,
resumable transfer as `modeldeck` targets (engine.targets.remote_deck), carried over ssh to
`modeldeck fleet receive` on the host instead of HTTP to its server (so a host needs no server
running and no token: ssh authenticated the user). Then it runs the host's own gated
`modeldeck deploy` there. The first host that fails stops the roll and the hosts already moved
are reversed, last first. The hosts record their moves in their own history and audit; this deck
records each step under the pointer `host:NAME` (what it last put there) and one `fleet-deploy`
(or `fleet-rollback`) audit row with every step.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from engine.config import TargetSettings
from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.host_settings import HostSettings
from engine.registry.records import ModelRef, VersionInfo
from engine.remote.fleet import FleetSnapshot, poll_fleet
from engine.remote.ssh import failure_reason, run_remote, ssh_transport
from engine.targets.remote_deck import RemoteDeckTarget, deck_identity
from engine.validate import parse_int

DEPLOY_TIMEOUT_S = 900.0  # a host's gated deploy may load a model before its gate answers
MAX_HEAD_BYTES = 64 << 10
MAX_FRAME_BYTES = 16 << 20
RECEIVABLE = ("/control/blobs/", "/control/versions")  # the transfer only: moves run as verbs


def hosts_named(deck: Deck, names: tuple[str, ...] | None = None) -> tuple[HostSettings, ...]:
    """The configured hosts, or the named ones in the order given (BadInput on an unknown or
    repeated name, before anything runs)."""
    configured = {host.name: host for host in deck.config.hosts}
    if names is None:
        return deck.config.hosts
    if not names:
        raise BadInput("--hosts needs at least one host name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadInput(f"host {repeated[0]!r} is named twice")
    unknown = [name for name in names if name not in configured]
    if unknown:
        known = ", ".join(configured) or "none: add [[hosts]] to deck.toml"
        raise BadInput(f"unknown host {unknown[0]!r} (known: {known})")
    return tuple(configured[name] for name in names)


def fleet_status(deck: Deck, names: tuple[str, ...] | None = None) -> FleetSnapshot:
    return poll_fleet(deck.paths.run, hosts_named(deck, names))


def fleet_watch(deck: Deck, interval_s: float, count: int | None = None,
                names: tuple[str, ...] | None = None) -> Generator[FleetSnapshot, None, None]:
    """A snapshot every interval_s (a slow host delays a tick, it does not pile polls up)."""
    import time

    hosts = hosts_named(deck, names)
    taken = 0
    while count is None or taken < count:
        started = time.monotonic()
        yield poll_fleet(deck.paths.run, hosts, with_watch=True)
        taken += 1
        if count is None or taken < count:
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


# ---- the receiving side: the transfer requests of one push, over one ssh session ------------

def receive(deck: Deck, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Serve the push protocol (engine.remote.ssh.ssh_transport) until stdin closes, with the
    very routes a modeldeck server mounts (engine.targets.receiver): the same checks, resumable
    uploads and registration. Per request: a JSON head line, the body as `<length>\\n<bytes>`
    frames ending with `0\\n`; per answer one JSON line {"status", "body"}."""
    import asyncio

    asyncio.run(_serve(deck, stdin, stdout))


async def _serve(deck: Deck, stdin: BinaryIO, stdout: BinaryIO) -> None:
    import httpx
    from starlette.applications import Starlette

    from engine.targets.receiver import transfer_routes

    # No token check: ssh authenticated this user, who may run any modeldeck verb here anyway.
    app = Starlette(routes=transfer_routes(deck, lambda request: None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://deck") as client:
        while line := stdin.readline(MAX_HEAD_BYTES):
            head, frames = _request_head(line), _Frames(stdin)
            response = await client.request(head["method"], head["path"], headers=head["headers"],
                                            content=frames.chunks())
            frames.drain()  # a route may answer before reading the whole body (409: resume)
            try:
                answer = response.json()
            except ValueError:
                answer = None
            stdout.write(json.dumps({"status": response.status_code, "body": answer}).encode()
                         + b"\n")
            stdout.flush()


def _request_head(line: bytes) -> dict[str, Any]:
    try:
        head = json.loads(line)
    except ValueError:
        raise BadInput("fleet receive: each request starts with a JSON head line") from None
    if not isinstance(head, dict) or head.get("method") not in ("POST", "PUT") \
            or not isinstance(head.get("path"), str) or not isinstance(head.get("headers"), dict) \
            or not head["path"].startswith(RECEIVABLE):
        raise BadInput("fleet receive: the head must be {method, path, headers} for a transfer route")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in head["headers"].items()):
        raise BadInput("fleet receive: headers must map names to strings")
    return head


class _Frames:
    """One request's body read from stdin frame by frame (never more than a frame in memory)."""

    def __init__(self, stdin: BinaryIO) -> None:
        self.stdin, self.done = stdin, False

    async def chunks(self) -> Any:
        while (chunk := self._next()) is not None:
            yield chunk

    def drain(self) -> None:
        while self._next() is not None:
            pass

    def _next(self) -> bytes | None:
        if self.done:
            return None
        self.done = True  # until this frame is whole: a broken body is not read on
        line = self.stdin.readline(32).decode("ascii", "replace").strip()
        size = parse_int("fleet receive: frame length", line, 0, MAX_FRAME_BYTES)
        data = self.stdin.read(size)
        if len(data) != size:
            raise BadInput("fleet receive: the request body ended early")
        self.done = size == 0
        return data or None


# ---- deploy and rollback across hosts ----------------------------------------------------------

@dataclass(frozen=True)
class FleetRequest:
    action: str  # deploy | rollback
    hosts: tuple[str, ...]
    reference: str | None = None  # deploy: NAME@VERSION
    to: str | None = None  # rollback: the version to return to (each host's numbering)
    reason: str | None = None
    force: bool = False


@dataclass(frozen=True)
class FleetStep:
    host: str
    step: str  # push | deploy | rollback | reverse
    ok: bool
    detail: str
    remote_ref: str | None = None
    previous_ref: str | None = None  # what the host served before this step


@dataclass(frozen=True)
class FleetResult:
    request: FleetRequest
    steps: tuple[FleetStep, ...]
    failed_host: str | None = None
    reason: str | None = None
    moved: tuple[str, ...] = field(default=())  # hosts left on the new version

    @property
    def ok(self) -> bool:
        return self.failed_host is None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.request.action, "reference": self.request.reference,
                "hosts": list(self.request.hosts), "ok": self.ok, "failed_host": self.failed_host,
                "reason": self.reason, "moved": list(self.moved),
                "steps": [asdict(step) for step in self.steps]}


class _SshDeckTarget(RemoteDeckTarget):
    """The `modeldeck` target's push (missing blobs, resumable uploads, registration) with its
    requests carried over ssh instead of HTTP."""

    def __init__(self, deck: Deck, host: HostSettings) -> None:
        # Not user input: built here, so not re-validated (a host may be named `local`).
        settings = TargetSettings.model_construct(name=host.name, kind="modeldeck",
                                                  url=f"http://{host.name}.fleet.invalid",
                                                  timeout_s=host.timeout_s)
        super().__init__(settings, deck.paths)
        self.host, self.run_dir = host, deck.paths.run
        self.transport: Any = None

    def _client(self) -> Any:
        import httpx

        self.transport = ssh_transport(self.run_dir, self.host)
        return httpx.Client(base_url=self.url, timeout=self.settings.timeout_s,
                            transport=self.transport)

    def failure(self, error: ActionFailed) -> str:
        """ssh's own reason ("connection refused") where the push broke on ssh."""
        reason = getattr(self.transport, "failure", None)
        return f"push over ssh failed: {reason}" if reason else str(error)


def plan_fleet(deck: Deck, request: FleetRequest) -> str:
    """What the request will do, in one line (validated: BadInput before anything runs)."""
    hosts = hosts_named(deck, request.hosts)
    names = ", ".join(host.name for host in hosts)
    if request.action == "deploy":
        if request.reference is None:
            raise BadInput("a fleet deploy needs NAME@VERSION")
        chosen = deck.registry.resolve(request.reference)
        if chosen.status == "rejected" and not request.force:
            raise BadInput(f"{chosen.ref} was rejected by its evaluation; pass --force to deploy "
                           "it anyway")
        return f"deploy {chosen.ref} to hosts {names}, one at a time"
    return f"roll back hosts {names}, one at a time" + (f" to {request.to}" if request.to else "")


def fleet_move(deck: Deck, request: FleetRequest) -> FleetResult:
    """Move the hosts one at a time; at the first failure, reverse those already moved."""
    plan_fleet(deck, request)
    hosts = hosts_named(deck, request.hosts)
    chosen = deck.registry.resolve(request.reference) if request.reference else None
    steps: list[FleetStep] = []
    moved: list[tuple[HostSettings, FleetStep]] = []
    failure: tuple[str, str] | None = None
    for host in hosts:
        step = _move_host(deck, host, request, chosen, steps)
        if not step.ok:
            failure = (host.name, step.detail)
            break
        moved.append((host, step))
    if failure is not None:
        for host, step in reversed(moved):
            steps.append(_reverse(deck, host, step, request, failure[0]))
    failed_host, reason = failure or (None, None)
    result = FleetResult(request, tuple(steps), failed_host, reason,
                         tuple(h.name for h, _ in moved) if failure is None else ())
    deck.registry.append_audit(f"fleet-{request.action}", _arguments(request),
                               "ok" if result.ok else "failed",
                               detail=json.dumps(result.to_dict()["steps"]), reason=request.reason)
    return result


def _arguments(request: FleetRequest) -> dict[str, Any]:
    return {"hosts": list(request.hosts), "ref": request.reference, "to": request.to,
            "force": request.force}


def _move_host(deck: Deck, host: HostSettings, request: FleetRequest, chosen: VersionInfo | None,
               steps: list[FleetStep]) -> FleetStep:
    reason = request.reason or f"fleet {request.action} across {', '.join(request.hosts)}"
    if chosen is not None:
        target = _SshDeckTarget(deck, host)
        try:
            remote_ref = target.push(chosen, deck.registry.materialize(chosen))
        except ActionFailed as error:
            steps.append(FleetStep(host.name, "push", False, target.failure(error)))
            return steps[-1]
        steps.append(FleetStep(host.name, "push", True, f"{chosen.ref} is {remote_ref} there",
                               remote_ref))
        arguments = ["deploy", remote_ref, *(["--force"] if request.force else [])]
    else:
        arguments = ["rollback", *(["--to", request.to] if request.to else [])]
    step = _run_move(deck, host, arguments, reason, request.action)
    steps.append(step)
    return step


def _run_move(deck: Deck, host: HostSettings, arguments: list[str], reason: str,
              step_name: str) -> FleetStep:
    """Run one of the host's own gated verbs and record it here under `host:NAME`."""
    result = run_remote(deck.paths.run, host, [*arguments, "--target", host.target, "--yes",
                                               "--json", "--reason", reason],
                        timeout_s=max(host.timeout_s, DEPLOY_TIMEOUT_S))
    if not result.ok:
        detail = failure_reason(result.returncode, result.stderr)
        _record_here(deck, host, None, step_name, reason, ok=False, detail=detail)
        return FleetStep(host.name, step_name, False, detail)
    answer = _last_json(result.stdout)
    chosen, current = answer.get("chosen") or {}, answer.get("current") or {}
    detail = f"{current.get('ref') or 'nothing'} -> {chosen.get('ref')}" \
        + ("" if answer.get("changed") else " (already there)")
    _record_here(deck, host, chosen, step_name, reason, ok=True, detail=detail)
    return FleetStep(host.name, step_name, True, detail, chosen.get("ref"), current.get("ref"))


def _reverse(deck: Deck, host: HostSettings, step: FleetStep, request: FleetRequest,
             failed_host: str) -> FleetStep:
    """Return a host to what it served before this roll (a rollback to that version when it
    is of the same model, else a deploy of it)."""
    if step.previous_ref is None or step.previous_ref == step.remote_ref:
        detail = "nothing served before" if step.previous_ref is None else "it did not change"
        return FleetStep(host.name, "reverse", step.previous_ref is not None,
                         f"not reversed: {detail}", step.remote_ref, step.previous_ref)
    previous = ModelRef.parse(step.previous_ref)
    same_model = step.remote_ref is not None and ModelRef.parse(step.remote_ref).model == previous.model
    arguments = ["rollback", "--to", str(previous.selector)] if same_model \
        else ["deploy", step.previous_ref, "--force"]
    reason = f"reversed: the fleet {request.action} failed on host {failed_host}"
    reversed_step = _run_move(deck, host, arguments, reason, "reverse")
    return FleetStep(host.name, "reverse", reversed_step.ok, reversed_step.detail,
                     step.previous_ref, step.remote_ref)


def _record_here(deck: Deck, host: HostSettings, chosen: dict[str, Any] | None, step: str,
                 reason: str, *, ok: bool, detail: str) -> None:
    """This deck's side of a host move: the `host:NAME` pointer when the host now serves a
    version this deck pushed (its lineage says so), else an audit row only."""
    local = _local_version(deck, chosen) if ok and chosen else None
    arguments = {"host": host.name, "target": host.target, "step": step,
                 "remote_ref": (chosen or {}).get("ref")}
    if local is None:
        deck.registry.append_audit("fleet-host", arguments, "ok" if ok else "failed",
                                   detail=detail, reason=reason)
        return
    action = "deploy" if step == "deploy" else "rollback"
    deck.registry.move_pointer(f"host:{host.name}", local, action=action, reason=reason,
                               arguments={**arguments, "ref": local.ref})


def _local_version(deck: Deck, chosen: dict[str, Any]) -> VersionInfo | None:
    origin = (chosen.get("lineage") or {}).get("pushed_from")
    prefix = f"{deck_identity(deck.paths)}:"
    if not isinstance(origin, str) or not origin.startswith(prefix):
        return None
    try:
        return deck.registry.resolve(origin[len(prefix):])
    except BadInput:
        return None


def _last_json(stdout: bytes) -> dict[str, Any]:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict):
            return document
    return {}
