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


def _engine_lines(engine: dict | None) -> list[str]:
    """What computes the served version: `engine    fused (Llama block, oneDNN prepacked on 2
    threads) on cpu, bfloat16, 1 torch thread`."""
    if not engine:
        return []
    threads = engine.get("torch_threads")
    thread_text = f", {threads} torch thread{'' if threads == 1 else 's'}" if threads else ""
    return [f"engine    {engine.get('engine_path', '?')} ({engine.get('engine_detail', '')}) on "
            f"{engine.get('device', '?')}, {engine.get('dtype', '?')}{thread_text}"]


def _status_text(report: actions.StatusReport) -> str:
    server = report.server
    lines = [f"deck      {report.home}",
             f"models    {report.model_count} ({report.version_count} "
             f"version{'' if report.version_count == 1 else 's'})",
             f"server    {server['state']}" + (f" at {server['url']} (pid {server['pid']})"
                                               if server.get("url") else ""),
             *_engine_lines(server.get("engine")),
             "jobs      " + (", ".join(f"{count} {state}" for state, count in sorted(report.jobs.items()) if count)
                             or "none"),
             "monitor   " + (f"running (pid {report.monitor['pid']})"
                             if report.monitor.get("state") == "running" else "not running")]
    lines += [f"warning   {warning}" for warning in report.warnings]
    if report.deployments:
        rows = [(d.target, d.ref, d.state, human_time(d.updated_at)) for d in report.deployments]
        lines += ["", table(("TARGET", "SERVING", "STATE", "SINCE"), rows)]
    else:
        lines.append("nothing deployed yet")
    return "\n".join(lines)
