"""`modeldeck targets list|check`: where versions can be deployed, and whether each answers."""

from __future__ import annotations

import argparse

from console.output import emit, human_time, table
from engine import actions
from engine.deck import Deck


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    targets = verbs.add_parser("targets", parents=[common], help="deploy targets from deck.toml")
    sub = targets.add_subparsers(dest="targets_verb", metavar="ACTION", required=True,
                                 parser_class=type(targets))
    sub.add_parser("list", parents=[common], help="targets and what each serves").set_defaults(
        handler=list_command)
    sub.add_parser("check", parents=[common], help="probe every target").set_defaults(
        handler=check_command)


def list_command(args: argparse.Namespace, deck: Deck) -> int:
    targets = actions.list_targets(deck)
    rows = [(t.name, t.kind, t.url, t.serving, t.state, human_time(t.since),
             "configured" if t.secret_configured else None) for t in targets]
    emit(args.json, "targets.list", {"targets": [t.to_dict() for t in targets]},
         lambda: table(("TARGET", "KIND", "URL", "SERVING", "STATE", "SINCE", "SECRET"), rows))
    return 0


def check_command(args: argparse.Namespace, deck: Deck) -> int:
    results = actions.check_targets(deck)
    rows = [(h.name, h.kind, "up" if h.reachable else "DOWN", h.detail) for h in results]
    emit(args.json, "targets.check", {"targets": [h.to_dict() for h in results]},
         lambda: table(("TARGET", "KIND", "STATUS", "DETAIL"), rows))
    return 0 if all(h.reachable for h in results) else 1
