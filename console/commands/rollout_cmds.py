"""`modeldeck rollout NAME@VERSION` and `modeldeck rollout status|pause|resume|abort`."""

from __future__ import annotations

import argparse
from typing import Any

from console.commands.arguments import duration, percent, percent_steps, text, whole
from console.output import emit
from engine import actions
from engine.deck import Deck
from engine.errors import BadInput

CONTROL_VERBS = ("status", "pause", "resume", "abort")
START_FLAGS = ("steps", "hold", "min_requests", "shadow", "reason")


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    rollout = verbs.add_parser(
        "rollout", parents=[common],
        help="ramp NAME@VERSION up on the local server (or a remote modeldeck target's) step "
             "by step behind latency, error and eval gates (or: status, pause, resume, abort)")
    rollout.add_argument("what", type=text("NAME@VERSION"), metavar="NAME@VERSION|" +
                         "|".join(CONTROL_VERBS))
    rollout.add_argument("--target", type=text("--target"), default="local",
                         help="local, or a kind = \"modeldeck\" target: its server runs the "
                              "rollout (the version is pushed to it first)")
    rollout.add_argument("--steps", type=percent_steps("--steps"), metavar="5,25,50,100",
                         help="traffic percentages, ending at 100 (default: deck.toml [rollout])")
    rollout.add_argument("--hold", type=duration("--hold"), metavar="60s",
                         help="how long each step holds before it is judged")
    rollout.add_argument("--min-requests", type=whole("--min-requests", 1), metavar="N",
                         help="requests the candidate must answer in a step before it is judged")
    rollout.add_argument("--shadow", type=percent("--shadow"), metavar="20%",
                         help="first mirror this share of live requests to the candidate "
                              "(answers dropped, latency and agreement measured)")
    rollout.add_argument("--force", action="store_true",
                         help="start even when the eval gate says HOLD or REJECT (audited)")
    rollout.add_argument("--reason", type=text("--reason"), help="why (kept in the audit log)")
    rollout.set_defaults(handler=rollout_command)


def rollout_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.what in CONTROL_VERBS:
        given = [name for name in START_FLAGS if getattr(args, name) is not None]
        if given or args.force:
            flag = "--" + (given[0] if given else "force").replace("_", "-")
            raise BadInput(f"{flag} applies to starting a rollout, not to `rollout {args.what}`")
        run = {"status": actions.rollout_status, "pause": actions.pause_rollout,
               "resume": actions.resume_rollout, "abort": actions.abort_rollout}[args.what]
        result = run(deck, args.target)
    else:
        request = actions.RolloutRequest(args.what, args.target, args.steps, args.hold,
                                         args.min_requests, args.shadow, args.force, args.reason)
        result = actions.rollout(deck, request)
    emit(args.json, "rollout", result.to_dict(), lambda: describe(result.to_dict()))
    return 0


def describe(payload: dict[str, Any]) -> str:
    lines = []
    evaluation = payload.get("eval")
    if evaluation:
        lines.append(f"eval gate: {evaluation['verdict']} (perplexity {evaluation['candidate_ppl']:.4g}"
                     f" against live {evaluation['live_ppl']:.4g}"
                     f"{', cached' if evaluation.get('cached') else ''})")
    state = payload.get("rollout")
    if not state:
        return "\n".join(lines + ["no rollout yet"])
    lines.append(f"rollout {state['candidate']} (live {state['live']}): {state['status']}, "
                 f"weight {state['weight']:.0%}: {state['message']}")
    lines.extend(step_lines(state.get("steps") or []))
    return "\n".join(lines)


def step_lines(steps: list[dict[str, Any]]) -> list[str]:
    lines = []
    for step in steps:
        gates = ", ".join(_gate_text(gate) for gate in step.get("gates", []))
        lines.append(f"  step {step['step']}: {step['outcome']} ({step['candidate_requests']} "
                     f"candidate / {step['live_requests']} live requests; {gates})")
    return lines


def _gate_text(gate: dict[str, Any]) -> str:
    if gate.get("skipped"):
        return f"{gate['gate']} skipped"
    return f"{gate['gate']} {gate['candidate']:g} vs {gate['live']:g}"
