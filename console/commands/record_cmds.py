"""`modeldeck record FILE`: the flight recorder (engine.actions.telemetry.record). No torch, no
textual. Ctrl-C is how a recording normally ends: it stops cleanly, with the summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from console.commands.arguments import existing_file, number, path_text, whole
from console.commands.telemetry_cmds import MAX_INTERVAL_S, MIN_INTERVAL_S, watch_request
from console.output import emit, human_bytes
from engine import actions
from engine.actions.telemetry import DEFAULT_MAX_BYTES, RecordRequest, record
from engine.deck import Deck


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = verbs.add_parser("record", parents=[common],
                              help="record GPUs, host, endpoints, the local server, jobs and "
                                   "every audited action to FILE, one JSON line per tick "
                                   "(replay it with `modeldeck tui --replay FILE`)")
    parser.add_argument("file", metavar="FILE", type=path_text("FILE"),
                        help="appended to if it is a recording already")
    parser.add_argument("--interval", type=number("--interval", MIN_INTERVAL_S, MAX_INTERVAL_S),
                        metavar="S", help="seconds between lines (default: [telemetry] interval_s)")
    parser.add_argument("--count", type=whole("--count", 1), metavar="N",
                        help="stop after N lines (default: until Ctrl-C)")
    parser.add_argument("--max-bytes", type=whole("--max-bytes", 4096), default=DEFAULT_MAX_BYTES,
                        metavar="N", help="gzip FILE to FILE.1.gz before it grows past N bytes "
                                          f"(default {DEFAULT_MAX_BYTES >> 20} MiB)")
    parser.add_argument("--keep", type=whole("--keep", 1, 1000), default=5, metavar="N",
                        help="rotated files kept (default 5)")
    parser.add_argument("--gpu-replay", type=existing_file("--gpu-replay"), metavar="FILE",
                        help="replay recorded NVML readings (JSON/JSONL) instead of reading NVML")
    parser.add_argument("--local", action="store_true",
                        help="this box only: skip remote endpoints and Prometheus")
    parser.set_defaults(handler=record_command)


def record_command(args: argparse.Namespace, deck: Deck) -> int:
    watch = watch_request(args)
    path = Path(args.file).expanduser()
    progress = None
    ticks = record(deck, RecordRequest(path, watch, args.max_bytes, args.keep))
    if not args.json:
        sys.stderr.write(f"recording to {path} (Ctrl-C stops)\n")
    try:
        for progress in ticks:
            pass
    except KeyboardInterrupt:
        pass  # the normal end of an open-ended recording
    finally:
        ticks.close()
    frames = progress.frames if progress else 0
    emit(args.json, "record", progress.to_dict() if progress else
         {"path": str(path), "frames": 0, "bytes_written": 0, "rotated": []},
         lambda: f"recorded {frames} lines ({human_bytes(progress.bytes_written if progress else 0)})"
                 f" to {path}" + (f"; rotated: {', '.join(progress.rotated)}"
                                  if progress and progress.rotated else ""))
    return 0
