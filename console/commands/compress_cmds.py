"""`modeldeck compress NAME@VERSION --method M [options] [--wait]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from console.commands.arguments import device, existing_file, number, text, whole
from console import present, present_models
from console.output import emit
from engine import actions
from engine.deck import Deck

# CLI flag -> CompressSpec field and its type function. The boundary judges what a value is (a
# finite number, a whole number that fits 64 bits, an existing file); the ranges are the engine's
# (engine.compression.spec: they depend on the method and the parent), checked there before any job
# is written. Only flags the user gives are passed on (so the engine can say "--sparsity does not
# apply to --method int8").
OPTION_FLAGS: dict[str, Callable[[str], Any]] = {
    "sparsity": number("--sparsity"),
    "recover_steps": whole("--recover-steps"),
    "student_layers": whole("--student-layers"),
    "steps": whole("--steps"),
    "temperature": number("--temperature"),
    "alpha": number("--alpha"),
    "learning_rate": number("--learning-rate"),
    "data": existing_file("--data"),
    "max_ppl_increase": number("--max-ppl-increase"),
    "decode_tokens": whole("--decode-tokens"),
    "batch_size": whole("--batch-size"),
}


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser("compress", parents=[common],
                              help="quantize, prune or distill NAME@VERSION into the next version")
    parser.add_argument("reference", type=text("NAME@VERSION"), help="NAME@VERSION or NAME@ALIAS")
    parser.add_argument("--method", default=None, type=text("--method"),
                        help="bf16 | fp16 | int8 | prune | distill (default: deck.toml [compress])")
    for name, kind in OPTION_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    parser.add_argument("--structured", nargs="?", const="mlp", default=None, metavar="mlp|heads",
                        type=text("--structured"),
                        help="prune whole MLP channels (default) or attention head groups")
    parser.add_argument("--keep", action="append", default=None, metavar="NAME", type=text("--keep"),
                        help="int8: keep modules whose name contains NAME in bf16 (repeatable)")
    parser.add_argument("--eval", dest="eval_file", default=None, metavar="FILE",
                        type=existing_file("--eval"),
                        help="held-out text for perplexity (default: the shipped eval text)")
    parser.add_argument("--device", default=None, type=device(), metavar="DEVICE",
                        help="where to compress and measure: auto, cpu, cuda, cuda:N "
                             "(default: deck.toml [serve] device, where the result will serve)")
    parser.add_argument("--wait", action="store_true", help="follow the job until the version exists")
    parser.set_defaults(handler=compress_command)


def compress_command(args: argparse.Namespace, deck: Deck) -> int:
    names = (*OPTION_FLAGS, "structured", "keep", "eval_file")
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    request = actions.CompressRequest(args.reference, args.method, options, args.wait, args.device)
    on_event = None if args.json else _print_event
    result = actions.compress(deck, request, on_event=on_event)
    emit(args.json, "compress", result.to_dict(), lambda: _summary(result))
    return 0


def _print_event(event: dict[str, Any]) -> None:
    if event.get("type") == "progress":
        line = (f"{present.plain(event.get('phase'))} step {present.plain(event.get('step'))}/"
                f"{present.plain(event.get('max_steps'))}  loss {present.number(event.get('loss'), 4)}")
    elif event.get("type") == "phase":
        line = f"-- {present.plain(event.get('phase'))}"
    else:
        return
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _summary(result: actions.CompressResult) -> str:
    if result.version is None:
        return (f"compress job {result.job.id} started; follow it with "
                f"`modeldeck jobs logs {result.job.id} --follow` (or pass --wait)")
    return f"{result.version.ref} ({result.version.status})\n" + report_table(result.report or {})


def report_table(report: dict[str, Any]) -> str:
    """Parent and result side by side, with the change: the table `models show` and the
    console's details view show (console.present)."""
    section = present_models.compression_section(report)
    return present.sections_text(present.Details("", (section,))).lstrip("\n")
