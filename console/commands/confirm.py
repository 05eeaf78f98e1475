"""Confirmation for destructive verbs: ask on a terminal, demand --yes otherwise."""

from __future__ import annotations

import argparse
import sys

from engine.errors import BadInput


def add_yes_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def confirm(args: argparse.Namespace, question: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise BadInput(f"{question.rstrip('?')}: needs confirmation; pass --yes when stdin is not a terminal")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")
