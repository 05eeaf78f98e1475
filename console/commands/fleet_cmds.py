"""`modeldeck fleet status|watch|receive` and the fleet side of `deploy|rollback --hosts`.
No torch, no textual: these run on every console tick and on every host."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from console.commands.arguments import number, text, whole
from console.commands.confirm import add_yes_flag, confirm
from console.output import emit, table
from engine.actions import fleet
from engine.deck import Deck
from engine.remote.fleet import FleetSnapshot

MIN_INTERVAL_S, MAX_INTERVAL_S = 0.2, 3600.0


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = verbs.add_parser("fleet", parents=[common],
                             help="every [[hosts]] host over ssh: status, watch")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", parents=[common],
                                help="each host's `modeldeck status` and the fleet's totals")
    _host_filter(status)
    status.set_defaults(handler=status_command)
    watch = actions.add_parser("watch", parents=[common],
                               help="each host's status and telemetry once per interval")
    _host_filter(watch)
    watch.add_argument("--interval", type=number("--interval", MIN_INTERVAL_S, MAX_INTERVAL_S),
                       default=5.0, metavar="S", help="seconds between polls (default 5)")
    watch.add_argument("--count", type=whole("--count", 1), metavar="N", help="stop after N polls")
    watch.set_defaults(handler=watch_command)
    receive = actions.add_parser("receive", parents=[common],
                                 help="(run by `deploy --hosts` over ssh) serve the version "
                                      "transfer on stdin and stdout")
    receive.set_defaults(handler=receive_command)


def _host_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", type=host_list, metavar="A,B",
                        help="only these hosts (default: every [[hosts]] entry)")


def host_list(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text("--hosts")(value).split(","))
    if not all(names):
        raise argparse.ArgumentTypeError("--hosts: a comma-separated list of host names")
    return names


def add_hosts_flag(parser: argparse.ArgumentParser, verb: str) -> None:
    """deploy/rollback --hosts: the verb on each named host in turn (deploy_cmds)."""
    parser.add_argument("--hosts", type=host_list, metavar="A,B,C",
                        help=f"{verb} on these [[hosts]] one at a time, each through its own "
                             "gated deploy; the first failure reverses the hosts already moved")


def status_command(args: argparse.Namespace, deck: Deck) -> int:
    snapshot = fleet.fleet_status(deck, args.hosts)
    emit(args.json, "fleet-status", snapshot.to_dict(), lambda: fleet_text(snapshot))
    return 0


def watch_command(args: argparse.Namespace, deck: Deck) -> int:
    ticks = fleet.fleet_watch(deck, args.interval, args.count, args.hosts)
    try:
        for snapshot in ticks:
            emit(args.json, "fleet-watch", snapshot.to_dict(),
                 lambda: fleet_text(snapshot, with_watch=True) + "\n")
    finally:
        ticks.close()
    return 0


def receive_command(args: argparse.Namespace, deck: Deck) -> int:
    fleet.receive(deck, sys.stdin.buffer, sys.stdout.buffer)
    return 0


def fleet_move_command(args: argparse.Namespace, deck: Deck, action: str) -> int:
    """deploy/rollback --hosts: each host's target is its own (deck.toml hosts.target)."""
    from engine.errors import BadInput

    if getattr(args, "target", "local") != "local":
        raise BadInput("--hosts moves each host's own target (deck.toml hosts.target); drop --target")
    if getattr(args, "wait", False) or getattr(args, "no_start", False):
        raise BadInput("--wait and --no-start are per host settings ([serve] autostart there) "
                       "with --hosts")
    request = fleet.FleetRequest(action, args.hosts, getattr(args, "reference", None),
                                 getattr(args, "to", None), args.reason,
                                 getattr(args, "force", False))
    plan = fleet.plan_fleet(deck, request)
    if not confirm(args, f"{plan}?"):
        emit(args.json, f"fleet-{action}", {"plan": plan, "changed": False, "cancelled": True},
             lambda: "cancelled; nothing changed")
        return 1
    result = fleet.fleet_move(deck, request)
    emit(args.json, f"fleet-{action}", result.to_dict(), lambda: _move_text(result))
    return 0 if result.ok else 1


def _move_text(result: fleet.FleetResult) -> str:
    rows = [(step.host, step.step, "ok" if step.ok else "FAILED", step.detail)
            for step in result.steps]
    stuck = [f"{step.host} ({step.detail})" for step in result.steps
             if step.step == "reverse" and not step.ok]
    moved_any = any(step.ok and step.step in ("deploy", "rollback") for step in result.steps)
    verdict = (f"done: {', '.join(result.moved)}" if result.ok else
               f"stopped at host {result.failed_host}: {result.reason}; "
               + (f"NOT reversed: {', '.join(stuck)}" if stuck
                  else "the hosts already moved were reversed" if moved_any
                  else "no host was moved"))
    return table(("HOST", "STEP", "RESULT", "DETAIL"), rows) + "\n" + verdict


def fleet_text(snapshot: FleetSnapshot, with_watch: bool = False) -> str:
    rows = []
    for host in snapshot.hosts:
        summary: dict[str, Any] = host.summary() if host.answered else {}
        rows.append((host.name, host.state, ", ".join(summary.get("serving") or []) or "-",
                     summary.get("server") or "-", _count(summary.get("running_jobs")),
                     *((_count(summary.get("gpus")), _rate(summary.get("tokens_per_s")))
                       if with_watch else ()),
                     host.reason or ""))
    headers = ("HOST", "STATE", "SERVING", "SERVER", "JOBS",
               *(("GPUS", "TOK/S") if with_watch else ()), "REASON")
    totals = snapshot.totals
    line = (f"{totals['hosts']} hosts: {totals['up']} up, {totals['stale']} stale, "
            f"{totals['down']} down; running jobs {_count(totals['running_jobs'])}")
    if with_watch:
        line += (f"; GPUs {_count(totals['gpus'])}; memory {_bytes(totals['memory_used_bytes'])}"
                 f" of {_bytes(totals['memory_total_bytes'])}; {_rate(totals['tokens_per_s'])} tok/s")
    return table(headers, rows) + "\n" + line if rows else "no hosts: add [[hosts]] to deck.toml"


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _bytes(value: Any) -> str:
    return "-" if value is None else f"{value / 2**30:.1f} GiB"
