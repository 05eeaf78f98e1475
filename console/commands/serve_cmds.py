"""`modeldeck serve`: run the embedded OpenAI-compatible server (foreground, --detach, --stop)."""

from __future__ import annotations

import argparse
from console.output import emit
from engine import actions
from engine.deck import Deck


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = verbs.add_parser("serve", parents=[common],
                             help="serve the version deployed to `local` (OpenAI-compatible API)")
    serve.add_argument("--host", help="address to bind (default from [serve], 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from [serve], 8471; 0 picks one)")
    serve.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    serve.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    serve.add_argument("--max-batch-size", type=int, help="sequences decoded together")
    serve.add_argument("--max-queue", type=int, help="requests waiting before 429")
    serve.add_argument("--api-key", help="require this key on /v1 (or set $MODELDECK_API_KEY)")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="start in the background and return")
    mode.add_argument("--stop", action="store_true", help="stop the background server")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace, deck: Deck) -> int:
    if args.stop:
        result = actions.stop_server(deck)
        emit(args.json, "serve.stop", result,
             lambda: f"stopped the server (pid {result['pid']})" if result["stopped"]
             else "no server was running")
        return 0
    from engine.serving.process import ServeOptions

    request = ServeOptions(args.host, args.port, args.device, args.dtype, args.max_batch_size,
                           args.max_queue, args.api_key)
    if args.detach:
        info = actions.start_server(deck, request)
        emit(args.json, "serve", {"state": "running", **info},
             lambda: f"serving at {info['url']} (pid {info['pid']}); stop with `modeldeck serve --stop`")
        return 0

    def ready(url: str, version: str | None) -> None:
        emit(args.json, "serve", {"state": "running", "url": url, "version": version},
             lambda: f"serving {version or 'nothing yet (deploy a version)'} at {url}; Ctrl-C stops")

    actions.serve(deck, request, on_ready=ready)
    return 0
