"""`modeldeck deploy`, `rollback`, `history` and `audit`."""

from __future__ import annotations

import argparse
import json

from console.commands.arguments import text, whole
from console.commands.confirm import add_yes_flag, confirm
from console.commands.fleet_cmds import add_hosts_flag, fleet_move_command
from console.output import emit, human_time, table
from engine import actions
from engine.deck import Deck


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    deploy = verbs.add_parser("deploy", parents=[common], help="point a target at NAME@VERSION")
    deploy.add_argument("reference", type=text("NAME@VERSION"), help="NAME@VERSION or NAME@ALIAS")
    deploy.add_argument("--target", type=text("--target"), default="local")
    deploy.add_argument("--reason", type=text("--reason"), help="why (kept in history and audit)")
    deploy.add_argument("--force", action="store_true", help="deploy a version its evaluation rejected")
    starting = deploy.add_mutually_exclusive_group()
    starting.add_argument("--wait", action="store_true",
                          help="local: start the server if it is not running (even with [serve] "
                               "autostart = false) and wait for the health gate (exit 1 when it fails)")
    starting.add_argument("--no-start", action="store_true",
                          help="local: only move the pointer when no server runs")
    add_hosts_flag(deploy, "deploy")
    add_yes_flag(deploy)
    deploy.set_defaults(handler=deploy_command)
    rollback = verbs.add_parser("rollback", parents=[common],
                                help="go back to the previous deployed version (or --to VERSION)")
    rollback.add_argument("--target", type=text("--target"), default="local")
    rollback.add_argument("--to", type=text("--to"),
                          help="version or alias of the deployed model to return to")
    rollback.add_argument("--reason", type=text("--reason"))
    add_hosts_flag(rollback, "roll back")
    add_yes_flag(rollback)
    rollback.set_defaults(handler=rollback_command)
    history = verbs.add_parser("history", parents=[common], help="what served when")
    history.add_argument("--target", type=text("--target"))
    history.add_argument("--limit", type=whole("--limit", 1), default=50, metavar="N")
    history.set_defaults(handler=history_command)
    audit = verbs.add_parser("audit", parents=[common], help="every action, newest first")
    audit.add_argument("--limit", type=whole("--limit", 1), default=50, metavar="N")
    audit.add_argument("--verb", type=text("--verb"), help="only this verb")
    audit.set_defaults(handler=audit_command)


def deploy_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.hosts:
        return fleet_move_command(args, deck, "deploy")
    start = True if args.wait else False if args.no_start else None  # None: [serve] autostart
    request = actions.DeployRequest(args.reference, args.target, args.reason, args.force,
                                    start_server=start)
    plan = actions.plan_deploy(deck, request)
    return _apply(args, plan, lambda: actions.deploy(deck, request))


def rollback_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.hosts:
        return fleet_move_command(args, deck, "rollback")
    request = actions.RollbackRequest(args.target, args.to, args.reason)
    plan = actions.plan_rollback(deck, request)
    return _apply(args, plan, lambda: actions.rollback(deck, request))


def _apply(args: argparse.Namespace, plan: actions.DeployPlan, run) -> int:
    kind = plan.action
    if plan.changes_anything and not confirm(args, f"{plan.describe()}?"):
        emit(args.json, kind, {"plan": plan.to_dict(), "changed": False, "cancelled": True},
             lambda: "cancelled; nothing changed")
        return 1
    result = run()
    emit(args.json, kind, result.to_dict(), lambda: _summary(plan, result))
    return 0


def _summary(plan: actions.DeployPlan, result: actions.DeployResult) -> str:
    text = plan.describe() if result.changed else f"{plan.target} already serves {plan.chosen.ref}"
    server = result.server or {}
    if server.get("state") == "running":
        text += f"\nlocal server: {server['url']} (pid {server['pid']})"
    elif server:
        text += "\nlocal server: not running (`modeldeck serve --detach` starts it)"
    return text


def history_command(args: argparse.Namespace, deck: Deck) -> int:
    entries = actions.history(deck, args.target, args.limit)
    rows = [(human_time(e.at), e.target, e.action, f"{e.model}@{e.version}",
             f"{e.previous_model}@{e.previous_version}" if e.previous_model else None,
             e.outcome, e.user, e.reason) for e in entries]
    steps = rollout_steps(deck, entries)
    emit(args.json, "history", {"entries": [{**e.to_dict(), **({"rollout_steps": steps[e.id]}
                                                              if e.id in steps else {})}
                                            for e in entries]},
         lambda: _history_text(rows, entries, steps) if rows else "no deployments yet")
    return 0


def rollout_steps(deck: Deck, entries: list) -> dict[int, list]:
    """history id -> the steps of the rollout it ended (kept in its audit row's detail)."""
    wanted = {entry.id for entry in entries if entry.action == "rollout"}
    found: dict[int, list] = {}
    if not wanted:
        return found
    for audit in actions.audit(deck, 1000, "rollout"):
        if audit.history_id is not None and audit.history_id in wanted and audit.detail:
            try:
                found[audit.history_id] = json.loads(audit.detail).get("steps", [])
            except (ValueError, AttributeError):
                continue
    return found


def _history_text(rows: list, entries: list, steps: dict[int, list]) -> str:
    from console.commands.rollout_cmds import step_lines

    lines = table(("WHEN", "TARGET", "ACTION", "VERSION", "PREVIOUS", "OUTCOME", "USER",
                   "REASON"), rows).splitlines()
    out = lines[:1]
    for line, entry in zip(lines[1:], entries):
        out.append(line)
        out.extend(step_lines(steps.get(entry.id, [])))
    return "\n".join(out)


def audit_command(args: argparse.Namespace, deck: Deck) -> int:
    entries = actions.audit(deck, args.limit, args.verb)
    rows = [(human_time(e.at), e.user, e.verb, json.dumps(e.arguments, sort_keys=True), e.result,
             e.detail, e.reason) for e in entries]
    emit(args.json, "audit", {"entries": [e.to_dict() for e in entries]},
         lambda: table(("WHEN", "USER", "VERB", "ARGUMENTS", "RESULT", "DETAIL", "REASON"), rows)
         if rows else "no actions recorded yet")
    return 0
