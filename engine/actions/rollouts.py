"""Progressive rollouts on the local server: `rollout NAME@VERSION` (eval gate, then the server's
controller ramps the candidate, engine.serving.rollout), and status, pause, resume, abort.
On a remote `modeldeck` target the same verbs go to that server (engine.actions.remote_rollouts).

Everything is checked before anything is written: the version, the target, the settings
(deck.toml [rollout] with the flags over it) and that a server runs to take the rollout.
The eval gate's verdict is stored with the candidate's version, bound to its content digest,
the live version's and the text's, so the same pair is judged once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import RolloutSettings
from engine.deck import Deck
from engine.errors import ActionFailed, BadInput
from engine.registry.records import VersionInfo
from engine.runstate import control, running_server

PROMOTE, HOLD, REJECT = "PROMOTE", "HOLD", "REJECT"
EVAL_KEY = "rollout_eval"


@dataclass(frozen=True)
class RolloutRequest:
    reference: str
    target: str = "local"
    steps: tuple[float, ...] | None = None  # fractions, the last 1.0
    hold_s: float | None = None
    min_requests: int | None = None
    shadow: float | None = None  # fraction of live requests mirrored before the first step
    force: bool = False  # start even when the eval gate says HOLD or REJECT (audited)
    reason: str | None = None


@dataclass(frozen=True)
class RolloutResult:
    rollout: dict[str, Any] | None
    eval: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "eval": self.eval}


def rollout_settings(deck: Deck, request: RolloutRequest) -> RolloutSettings:
    """deck.toml's [rollout] with the request's overrides, validated as deck.toml is."""
    from pydantic import ValidationError

    overrides = {name: value for name, value in (("steps", request.steps),
                                                 ("hold_s", request.hold_s),
                                                 ("min_requests", request.min_requests),
                                                 ("shadow", request.shadow))
                 if value is not None}
    slo = deck.config.slo  # the deck's [slo] bounds gate a rollout too, unless [rollout] sets them
    from_slo = {name: bound for name, bound in (("slo_ttft_s", slo.ttft_s), ("slo_itl_s", slo.itl_s))
                if bound is not None}
    try:
        return RolloutSettings.model_validate({**from_slo,
                                               **deck.config.rollout.model_dump(exclude_none=True),
                                               **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        raise BadInput(f"rollout {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def plan_rollout(deck: Deck, request: RolloutRequest) -> tuple[VersionInfo, VersionInfo,
                                                              RolloutSettings]:
    """(candidate, live, settings), or BadInput / ActionFailed before anything is written."""
    if request.target != "local":
        from engine.actions.remote_rollouts import plan_remote_rollout

        plan = plan_remote_rollout(deck, request)
        return plan.candidate, plan.live, plan.settings
    candidate = deck.registry.resolve(request.reference)
    if candidate.kind != "model":
        raise BadInput(f"{candidate.ref} is a {candidate.kind}; the local server serves full models")
    settings = rollout_settings(deck, request)
    deployment = deck.registry.deployment("local")
    if deployment is None:
        raise BadInput("nothing is deployed to local: deploy a version first, then roll out the next")
    if deployment.ref == candidate.ref:
        raise BadInput(f"{candidate.ref} is already deployed to local")
    if running_server(deck.paths) is None:
        raise ActionFailed("the local server is not running; a rollout runs inside it "
                           "(`modeldeck serve --detach`)")
    return candidate, deck.registry.resolve(deployment.ref), settings


def rollout(deck: Deck, request: RolloutRequest) -> RolloutResult:
    if request.target != "local":
        from engine.actions.remote_rollouts import remote_rollout

        return remote_rollout(deck, request)
    candidate, live, settings = plan_rollout(deck, request)
    evaluation = eval_gate(deck, candidate, live, settings)
    gate_or_hold(deck, request, candidate, live, evaluation)
    answer = control(deck.paths, "rollout/start", {
        "model": candidate.model, "version": candidate.version,
        "settings": settings.model_dump(mode="json"), "eval": evaluation})
    if not answer.get("started"):
        gate = answer.get("gate") or {}
        raise ActionFailed(f"{candidate.ref} did not load on the local server: "
                           f"{gate.get('reason', 'refused')}; nothing changed")
    return RolloutResult(answer.get("rollout"), evaluation)


def gate_or_hold(deck: Deck, request: RolloutRequest, candidate: VersionInfo, live: VersionInfo,
                 evaluation: dict[str, Any]) -> None:
    """ActionFailed (audited as held) unless the eval gate says PROMOTE or --force overrides it
    (audited as rollout-force)."""
    arguments = {"ref": candidate.ref, "live": live.ref, "verdict": evaluation["verdict"],
                 **({"target": request.target} if request.target != "local" else {})}
    if evaluation["verdict"] == PROMOTE:
        return
    if not request.force:
        deck.registry.append_audit("rollout", arguments, "held", detail=json.dumps(evaluation),
                                   reason=request.reason)
        raise ActionFailed(f"{candidate.ref}: eval gate says {evaluation['verdict']} "
                           f"(perplexity {evaluation['candidate_ppl']:.3g} against live "
                           f"{evaluation['live_ppl']:.3g}); no traffic sent; --force overrides")
    deck.registry.append_audit("rollout-force", arguments, "ok", detail=json.dumps(evaluation),
                               reason=request.reason or "eval gate overridden with --force")


def rollout_status(deck: Deck, target: str = "local") -> RolloutResult:
    """The running rollout from the server; without a server, the last state on disk."""
    if target != "local":
        from engine.actions.remote_rollouts import remote_command

        return remote_command(deck, target, "status")
    if running_server(deck.paths) is not None:
        return RolloutResult(control(deck.paths, "rollout/status").get("rollout"))
    return rollout_state(deck)


def rollout_state(deck: Deck) -> RolloutResult:
    """The state as the server last wrote it to run/rollout.json (it rewrites the file at every
    change, every tick while a step holds), without a request to the server: what a view
    that polls every second reads. The shadow numbers are as of that write."""
    from engine.serving.rollout import read_state

    state = read_state(deck.paths)
    return RolloutResult(state.to_dict() if state else None)


def pause_rollout(deck: Deck, target: str = "local") -> RolloutResult:
    return _command(deck, "pause", target)


def resume_rollout(deck: Deck, target: str = "local") -> RolloutResult:
    return _command(deck, "resume", target)


def abort_rollout(deck: Deck, target: str = "local") -> RolloutResult:
    return _command(deck, "abort", target)


def _command(deck: Deck, verb: str, target: str = "local") -> RolloutResult:
    if target != "local":
        from engine.actions.remote_rollouts import remote_command

        return remote_command(deck, target, verb)
    if running_server(deck.paths) is None:
        raise ActionFailed("the local server is not running; no rollout is in progress")
    return RolloutResult(control(deck.paths, f"rollout/{verb}").get("rollout"))


# ---- the eval gate ------------------------------------------------------------------------------


def content_digest(version: VersionInfo) -> str:
    """One hash of a version's files (names and contents), so a re-import of the same weights
    under a new version number is known to be the same candidate."""
    listing = "\n".join(f"{entry.name}:{entry.sha256}" for entry in sorted(version.files,
                                                                            key=lambda e: e.name))
    return hashlib.sha256(listing.encode()).hexdigest()


def eval_text(settings: RolloutSettings) -> tuple[Path, str]:
    from engine.compression.evaluate import DEFAULT_EVAL_TEXT

    path = Path(settings.eval_file).expanduser() if settings.eval_file else DEFAULT_EVAL_TEXT
    try:
        return path, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"rollout eval_file {path}: {getattr(error, 'strerror', None) or error}") from None


def verdict(candidate_ppl: float, live_ppl: float, settings: RolloutSettings) -> str:
    if candidate_ppl <= live_ppl * settings.promote_ppl_ratio:
        return PROMOTE
    return HOLD if candidate_ppl <= live_ppl * settings.hold_ppl_ratio else REJECT


def eval_gate(deck: Deck, candidate: VersionInfo, live: VersionInfo,
              settings: RolloutSettings) -> dict[str, Any]:
    """Perplexity of both versions on the same held-out text, and the verdict; reused from the
    registry when this candidate (by content) was judged against this live version and text."""
    path, text = eval_text(settings)
    key = "|".join((content_digest(live), hashlib.sha256(text.encode()).hexdigest()))
    digest = content_digest(candidate)
    stored = candidate.metrics.get(EVAL_KEY) if isinstance(candidate.metrics, dict) else None
    if isinstance(stored, dict) and stored.get("digest") == digest and key in stored.get("against", {}):
        cached = dict(stored["against"][key])
        cached["verdict"] = verdict(cached["candidate_ppl"], cached["live_ppl"], settings)
        return {**cached, "cached": True}
    result: dict[str, Any] = {"candidate": candidate.ref, "live": live.ref, "eval_file": str(path),
              "candidate_ppl": _perplexity(deck, candidate, text),
              "live_ppl": _perplexity(deck, live, text)}
    result["verdict"] = verdict(result["candidate_ppl"], result["live_ppl"], settings)
    against = dict(stored.get("against", {})) if isinstance(stored, dict) and \
        stored.get("digest") == digest else {}
    against[key] = result
    deck.registry.update_metrics(candidate.model, candidate.version,
                                 {EVAL_KEY: {"digest": digest, "against": against}})
    return {**result, "cached": False}


def _perplexity(deck: Deck, version: VersionInfo, text: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.compression.evaluate import perplexity
    from engine.modelio.loader import quiet_transformers

    quiet_transformers()  # a CLI's stderr is for diagnostics, not progress bars
    files = deck.registry.materialize(version)
    model = AutoModelForCausalLM.from_pretrained(files, dtype=torch.float32).eval()
    try:
        return round(perplexity(model, AutoTokenizer.from_pretrained(files), text), 4)
    except ValueError as error:
        raise BadInput(f"rollout eval text: {error}") from None
