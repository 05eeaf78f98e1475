"""`modeldeck`: the headless verbs, and the TUI when run with no verb (or `tui`).

textual is imported only on the TUI path; every other verb stays light (a test checks it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from console.commands import COMMAND_MODULES
from console.output import emit_error
from engine.deck import Deck
from engine.errors import DeckError


class CleanParser(argparse.ArgumentParser):
    """Bad usage gets one line naming the problem and exit 2, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        json_mode = "--json" in sys.argv
        emit_error(json_mode, "bad-input", f"{message} (see `{self.prog} --help`)", 2)
        raise SystemExit(2)


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--config", metavar="FILE",
                        help="deck.toml to use (default: $MODELDECK_CONFIG, then $MODELDECK_HOME/deck.toml)")
    return common


def build_parser() -> CleanParser:
    common = common_options()
    parser = CleanParser(prog="modeldeck", parents=[common],
                         description="Terminal console for serving, fine-tuning and compressing "
                                     "language models. With no command, opens the console.")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CleanParser)
    tui = verbs.add_parser("tui", parents=[common], help="open the console (the default)")
    tui.add_argument("--readonly", action="store_true", help="hide and refuse every action")
    tui.add_argument("--theme", help="theme name (see themes/)")
    tui.set_defaults(handler=run_tui)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(verbs, common)
    return parser


def run_tui(args: argparse.Namespace, deck: Deck) -> int:
    from console.app import run_app  # textual is imported here, and only here

    return run_app(deck, readonly=getattr(args, "readonly", False), theme=getattr(args, "theme", None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args.handler, args.readonly, args.theme = run_tui, False, None
    deck = Deck(config_file=args.config)
    try:
        return int(args.handler(args, deck) or 0)
    except DeckError as error:
        emit_error(args.json, error.kind, str(error), error.exit_code)
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("modeldeck: interrupted\n")
        return 130
    finally:
        deck.close()


if __name__ == "__main__":
    sys.exit(main())
