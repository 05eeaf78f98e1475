"""`modeldeck alerts [--since TIME] [--rules]` and `modeldeck monitor [--detach | --stop]`.
No torch, no textual."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from console.commands.arguments import number, text, whole
from console.output import emit, human_time, json_line, table
from engine import SCHEMA
from engine.actions import alerts as alert_actions
from engine.deck import Deck


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    alerts = verbs.add_parser("alerts", parents=[common],
                              help="alerts fired and resolved (the log under the deck home)")
    alerts.add_argument("--since", type=text("--since", 100), metavar="TIME",
                        help="only newer ones: an ISO date/time (2026-11-26T02:00) or a "
                             "duration back from now (30m, 2h, 3d)")
    alerts.add_argument("--rules", action="store_true",
                        help="list the rules in force (the defaults and deck.toml's [[alerts]])")
    alerts.set_defaults(handler=alerts_command)

    monitor = verbs.add_parser("monitor", parents=[common],
                               help="sample and evaluate alerts with no console open")
    mode = monitor.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true",
                      help="run in the background (pid in run/monitor.json) and return")
    mode.add_argument("--stop", action="store_true", help="stop the background monitor")
    monitor.add_argument("--interval", type=number("--interval", 0.05, 3600.0), metavar="S",
                         help="seconds between ticks (default: [telemetry] interval_s)")
    monitor.add_argument("--count", type=whole("--count", 1), metavar="N",
                         help="foreground: stop after N ticks")
    monitor.set_defaults(handler=monitor_command)


def alerts_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.rules:
        rules = alert_actions.alert_rules(deck)
        emit(args.json, "alerts.rules", {"rules": rules}, lambda: _rules_text(rules))
        return 0
    listing = alert_actions.list_alerts(deck, alert_actions.AlertsRequest(args.since))
    emit(args.json, "alerts", listing.to_dict(), lambda: _alerts_text(listing))
    return 0


def _alerts_text(listing: alert_actions.AlertList) -> str:
    if not listing.records:
        return "no alerts" + (f" since {human_time(listing.since)}" if listing.since else "")
    rows = [(human_time(record.get("t")), record.get("state"), record.get("severity") or "",
             record.get("rule"), record.get("subject"), _detail(record))
            for record in listing.records]
    text = table(("TIME", "STATE", "SEVERITY", "RULE", "SUBJECT", "DETAIL"), rows)
    if listing.firing:
        firing = ", ".join(f"{record['rule']} ({record['subject']})" for record in listing.firing)
        text += f"\nfiring now: {firing}"
    return text


def _detail(record: dict[str, Any]) -> str:
    if record.get("state") == "undelivered":
        return f"{record.get('sink')}: {record.get('reason')}"
    values = record.get("values") or {}
    shown = ", ".join(f"{path}={value}" for path, value in values.items())
    if record.get("state") == "resolved":
        flaps = record.get("flaps") or 0
        return f"after {record.get('duration_s', 0):.0f} s" + (f", {flaps} flaps" if flaps else "")
    return shown


def _rules_text(rules: list[dict[str, Any]]) -> str:
    rows = [(rule["name"], rule["when"], f"{rule['for_s']:g} s", f"{rule['suppress_s']:g} s",
             rule["severity"], _sinks(rule)) for rule in rules]
    return table(("RULE", "WHEN", "FOR", "SUPPRESS", "SEVERITY", "SINKS"), rows)


def _sinks(rule: dict[str, Any]) -> str:
    sinks = ["log"]
    if rule.get("webhook"):
        sinks.append("webhook")
    if rule.get("command"):
        sinks.append("command")
    if rule.get("bell"):
        sinks.append("bell")
    return ", ".join(sinks)


def monitor_command(args: argparse.Namespace, deck: Deck) -> int:
    request = alert_actions.MonitorRequest(args.detach, args.stop, args.interval, args.count)
    if not (args.detach or args.stop) and not args.json:
        print(f"monitoring {deck.paths.home} (Ctrl-C stops)", file=sys.stderr, flush=True)
    result = alert_actions.monitor(deck, request, lambda record: _print_record(args.json, record))
    emit(args.json, "monitor", result.to_dict(), lambda: _monitor_text(result))
    return 0


def _print_record(json_mode: bool, record: dict[str, Any]) -> None:
    if json_mode:
        sys.stdout.write(json_line({"schema": SCHEMA, "kind": "alert", **record}) + "\n")
    else:
        sys.stdout.write(f"{human_time(record.get('t'))}  {str(record['state']).upper():8}  "
                         f"{record['message']}\n")
    sys.stdout.flush()


def _monitor_text(result: alert_actions.MonitorResult) -> str:
    if result.state == "running":
        return f"monitor running (pid {result.pid}); stop it with `modeldeck monitor --stop`"
    if result.state == "stopped":
        return f"monitor stopped (pid {result.pid})"
    if result.state == "not-running":
        return "no monitor is running"
    return f"monitor finished after {result.detail.get('ticks', 0)} ticks"
