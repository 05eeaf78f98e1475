"""`modeldeck`: the headless verbs, and the TUI when run with no verb (or `tui`).

textual is imported only on the TUI path; every other verb stays light (a test checks it).

Every invocation ends in a defined way: 0 done, 1 the action failed, 2 bad input (one line on
stderr, nothing written), 130 interrupted, 141 when the reader of stdout went away (`| head`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

from console.commands import COMMAND_MODULES, VERB_MODULES
from console.commands.arguments import path_text
from console.output import emit_error
from engine.deck import Deck
from engine.errors import BadInput, DeckError

DEBUG_VARIABLE = "MODELDECK_DEBUG"
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a writer killed by SIGPIPE


class UsageError(Exception):
    """Bad command-line usage, raised by CleanParser and reported by main() (exit 2)."""


class CleanParser(argparse.ArgumentParser):
    """Bad usage gets one line naming the problem and exit 2, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse writes "argument --limit: " before a type function's message, which already
        # names the flag ("--limit must be at least 1"): say it once.
        message = re.sub(r"^argument (?:\S+/)?(\S+): (?=\1 )", "", message)
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def common_options(suppress: bool = False) -> CleanParser:
    """--json and --config, accepted before the verb and after it.

    Sub-commands get them with SUPPRESS defaults: argparse copies a sub-parser's defaults over the
    top-level values, so a plain default there would silently undo `modeldeck --json VERB`.
    """
    common = CleanParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout",
                        default=argparse.SUPPRESS if suppress else False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS if suppress else None,
                        help="deck.toml to use (default: $MODELDECK_CONFIG, then $MODELDECK_HOME/deck.toml)")
    return common


def build_parser(arguments: Sequence[str] | None = None) -> CleanParser:
    """The whole parser, or, given the command line, one with only its verb's module registered
    (the others are not even imported: start-up time is most of a quick verb's run)."""
    parser = CleanParser(prog="modeldeck", parents=[common_options()],
                         description="Terminal console for serving, fine-tuning and compressing "
                                     "language models. With no command, opens the console.")
    common = common_options(suppress=True)
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CleanParser)
    tui = verbs.add_parser("tui", parents=[common], help="open the console (the default)")
    tui.add_argument("--readonly", action="store_true", help="hide and refuse every action")
    tui.add_argument("--theme", help="theme name (see themes/)")
    tui.add_argument("--replay", metavar="FILE", type=path_text("--replay"),
                     help="replay a recording (`modeldeck record`) instead of the live deck")
    tui.set_defaults(handler=run_tui)
    verb = None if arguments is None else _verb_of(arguments)
    if verb in VERB_MODULES:
        needed: tuple[str, ...] = (VERB_MODULES[verb],)
    else:  # `tui` needs no verb module; help, no verb or an unknown one needs them all
        needed = () if verb == "tui" else COMMAND_MODULES
    for module_name in needed:
        importlib.import_module(module_name).register(verbs, common)
    return parser


def _verb_of(arguments: Sequence[str]) -> str | None:
    """The verb a command line names: its first word that is neither a top-level option nor
    --config's value. None where help comes first or there is no verb (the whole parser then
    answers: the full help, the console, or argparse's "invalid choice" naming every verb)."""
    words = iter(arguments)
    for word in words:
        if word == "--config":
            next(words, None)
        elif word == "--json" or word.startswith("--config="):
            continue
        elif word.startswith("-"):
            return None
        else:
            return word
    return None


def run_tui(args: argparse.Namespace, deck: Deck) -> int:
    from console.app import run_app  # textual is imported here, and only here

    return run_app(deck, readonly=getattr(args, "readonly", False), theme=getattr(args, "theme", None),
                   replay=getattr(args, "replay", None))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(arguments).parse_args(arguments)
    except UsageError as error:
        emit_error("--json" in arguments, "bad-input", str(error), 2)
        return 2
    if args.command is None:
        args.handler, args.readonly, args.theme = run_tui, False, None
    deck = Deck(config_file=args.config)
    try:
        return _run(args, deck)
    finally:
        deck.close()


def _run(args: argparse.Namespace, deck: Deck) -> int:
    """The verb, with every way it can end mapped to an exit code and at most one line."""
    try:
        deck.paths.check_home()  # before deck.toml: a home we cannot read is the first thing wrong
        deck.check_config()  # a broken deck.toml is exit 2 whatever the verb
        return int(args.handler(args, deck) or 0)
    except DeckError as error:
        emit_error(args.json, error.kind, str(error), error.exit_code)
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("modeldeck: interrupted\n")
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    except OSError as error:  # last line of defence: the real causes are fixed where they arise
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        emit_error(args.json, "failed", _describe_os_error(error), 1)
        return 1
    except Exception as error:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        emit_error(args.json, "failed", f"unexpected {type(error).__name__}: {_first_line(error)} "
                                        f"(run with {DEBUG_VARIABLE}=1 for the traceback)", 1)
        return 1


def _reader_went_away() -> int:
    """`modeldeck watch | head -1`: stop quietly. stdout is pointed at /dev/null so that the
    interpreter's final flush does not fail again (the pattern the Python docs give)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (in-process tests): nothing will flush to a pipe
    return EXIT_BROKEN_PIPE


def _describe_os_error(error: OSError) -> str:
    what = str(error.filename) if error.filename is not None else type(error).__name__
    what = what if len(what) <= 200 else what[:200] + "..."
    reason = error.strerror or _first_line(error)
    return f"{what}: {reason}"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= 200 else text[:200] + "..."


if __name__ == "__main__":
    sys.exit(main())
