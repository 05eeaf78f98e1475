"""`modeldeck status`: the deck at a glance. Kept cheap: no torch or textual."""

from __future__ import annotations

import argparse

from console.output import emit, human_time, table
from engine import actions
from engine.deck import Deck


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    status = verbs.add_parser("status", parents=[common], help="the deck at a glance")
    status.set_defaults(handler=status_command)


def status_command(args: argparse.Namespace, deck: Deck) -> int:
    report = actions.status(deck)
    emit(args.json, "status", report.to_dict(), lambda: _status_text(report))
    return 0


def _status_text(report: actions.StatusReport) -> str:
    server = report.server
    lines = [f"deck      {report.home}",
             f"models    {report.model_count} ({report.version_count} "
             f"version{'' if report.version_count == 1 else 's'})",
             f"server    {server['state']}" + (f" at {server['url']} (pid {server['pid']})"
                                               if server.get("url") else ""),
             "jobs      " + (", ".join(f"{count} {state}" for state, count in sorted(report.jobs.items()) if count)
                             or "none")]
    lines += [f"warning   {warning}" for warning in report.warnings]
    if report.deployments:
        rows = [(d.target, d.ref, d.state, human_time(d.updated_at)) for d in report.deployments]
        lines += ["", table(("TARGET", "SERVING", "STATE", "SINCE"), rows)]
    else:
        lines.append("nothing deployed yet")
    return "\n".join(lines)
