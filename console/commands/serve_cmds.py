"""`modeldeck serve`: run the embedded OpenAI-compatible server (foreground, --detach, --stop,
--rotate-token)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from console.commands.arguments import existing_file
from console.output import emit
from engine import actions
from engine.deck import Deck
from engine.errors import BadInput


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = verbs.add_parser("serve", parents=[common],
                             help="serve the version deployed to `local` (OpenAI-compatible API)")
    serve.add_argument("--host", help="address to bind (default from [serve], 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from [serve], 8471; 0 picks one)")
    serve.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    serve.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    serve.add_argument("--max-batch-size", type=int, help="sequences decoded together")
    serve.add_argument("--max-queue", type=int, help="requests waiting before 429")
    key = serve.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="require this key on /v1 (visible in `ps`: prefer "
                                       "--api-key-file or $MODELDECK_API_KEY)")
    key.add_argument("--api-key-file", type=existing_file("--api-key-file"), metavar="FILE",
                     help="require the key this file holds on /v1")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="start in the background and return")
    mode.add_argument("--stop", action="store_true", help="stop the background server")
    mode.add_argument("--rotate-token", action="store_true",
                      help="replace the control token in run/control.token (a running server "
                           "accepts only the new one from its next control request)")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.stop:
        result = actions.stop_server(deck)
        emit(args.json, "serve.stop", result,
             lambda: f"stopped the server (pid {result['pid']})" if result["stopped"]
             else "no server was running")
        return 0
    if args.rotate_token:
        rotated = actions.rotate_control_token(deck)
        emit(args.json, "serve.rotate-token", rotated, lambda: _rotated_text(rotated))
        return 0
    from engine.serving.process import ServeOptions

    api_key = args.api_key
    if args.api_key_file:
        from engine.config import read_secret_file

        api_key = read_secret_file(Path(args.api_key_file))
        if api_key is None:
            raise BadInput(f"--api-key-file {args.api_key_file}: the file is empty")
    request = ServeOptions(args.host, args.port, args.device, args.dtype, args.max_batch_size,
                           args.max_queue, api_key)
    if args.detach:
        info = actions.start_server(deck, request)
        _warn(info["warnings"])
        emit(args.json, "serve", {"state": "running", **info},
             lambda: f"serving at {info['url']} (pid {info['pid']}); stop with `modeldeck serve --stop`")
        return 0

    def ready(url: str, version: str | None) -> None:
        emit(args.json, "serve", {"state": "running", "url": url, "version": version},
             lambda: f"serving {version or 'nothing yet (deploy a version)'} at {url}; Ctrl-C stops")

    actions.serve(deck, request, on_ready=ready, on_warning=lambda line: _warn([line]))
    return 0


def _warn(lines: list[str]) -> None:
    """On stderr, so a script reading --json on stdout still sees them."""
    for line in lines:
        sys.stderr.write(f"modeldeck: warning: {line}\n")


def _rotated_text(rotated: dict) -> str:
    where = rotated["token_file"]
    if rotated["server_running"]:
        return (f"rotated the control token in {where}; the running server (pid {rotated['pid']}) "
                "refuses the old one from now on; replace any copy of it (a remote deck's "
                "api_key_file)")
    return (f"rotated the control token in {where}; no server runs, the next start uses it; "
            "replace any copy of it (a remote deck's api_key_file)")
