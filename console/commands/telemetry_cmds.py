"""`modeldeck watch` and `modeldeck endpoints list|check`. No torch, no textual (a test checks it)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from console import present
from console.commands.arguments import existing_file, number, text, whole
from console.output import emit, human_memory, table
from engine import actions
from engine.actions import alerts as alert_actions
from engine.deck import Deck

# The engine's bounds (actions.watch, actions.check_endpoints), judged here at parse time too.
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.05, 3600.0
MAX_WINDOW_S = 300.0


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    watch = verbs.add_parser("watch", parents=[common],
                             help="print GPUs, host and endpoints once per interval "
                                  "(--json: one JSON line per snapshot)")
    watch.add_argument("--interval", type=number("--interval", MIN_INTERVAL_S, MAX_INTERVAL_S),
                       metavar="S", help="seconds between snapshots (default: [telemetry] interval_s)")
    watch.add_argument("--count", type=whole("--count", 1), metavar="N", help="stop after N snapshots")
    watch.add_argument("--gpu-replay", type=existing_file("--gpu-replay"), metavar="FILE",
                       help="replay recorded NVML readings (JSON/JSONL) instead of reading NVML")
    watch.add_argument("--local", action="store_true",
                       help="this box only: skip remote endpoints and Prometheus")
    watch.set_defaults(handler=watch_command)

    endpoints = verbs.add_parser("endpoints", parents=[common], help="remote serving endpoints")
    sub = endpoints.add_subparsers(dest="endpoints_verb", metavar="ACTION", required=True,
                                   parser_class=type(endpoints))
    listing = sub.add_parser("list", parents=[common], help="the endpoints in deck.toml")
    listing.set_defaults(handler=list_command)
    check = sub.add_parser("check", parents=[common],
                           help="probe and scrape endpoints now (exit 1 if any is down)")
    check.add_argument("names", nargs="*", metavar="NAME", type=text("NAME"),
                       help="only these endpoints")
    check.add_argument("--window", type=number("--window", 0.0, MAX_WINDOW_S), default=0.0, metavar="S",
                       help="scrape twice S seconds apart to report rates and percentiles")
    check.set_defaults(handler=check_command)
    discover = sub.add_parser("discover", parents=[common],
                              help="find serving engines running on this box (vLLM, llama.cpp, "
                                   "Ollama, SGLang, TGI, LM Studio, modeldeck) and print "
                                   "[[endpoints]] entries for them")
    discover.add_argument("--add", action="store_true",
                          help="append the ones deck.toml lacks to it (comments kept)")
    discover.set_defaults(handler=discover_command)


# ---- watch ------------------------------------------------------------------------------------


def watch_request(args: argparse.Namespace) -> actions.WatchRequest:
    """What to sample, from watch's (and record's) --interval, --count, --gpu-replay, --local."""
    replay = Path(args.gpu_replay) if args.gpu_replay else None
    return actions.WatchRequest(args.interval, args.count, replay, not args.local)


def watch_command(args: argparse.Namespace, deck: Deck) -> int:
    ticks = actions.watch(deck, watch_request(args))
    # The sampling process evaluates alerts (not with --local: endpoints unseen are not clear).
    alerts = alert_actions.alert_service(deck) if not args.local else None
    feed = alert_actions.alert_feed(deck)  # what this or another process announced: shown
    try:
        for snapshot in ticks:
            if alerts is not None:
                alerts.observe(snapshot)
            if args.json:
                emit(True, "watch", snapshot.to_dict())
            else:
                emit(False, "watch", {}, lambda: watch_text(snapshot, feed.new()) + "\n")
    finally:
        ticks.close()
        if alerts is not None:
            alerts.close()
    return 0


def watch_text(snapshot: Any, alerts: Sequence[dict[str, Any]] = ()) -> str:
    stamp = present.clock(snapshot.taken_at)
    lines = [f"== {stamp}  #{snapshot.sequence}"]
    lines += [f"ALERT {record['state']}: {record.get('message') or record.get('reason')}"
              for record in alerts]
    host = snapshot.host
    if host is not None:
        lines.append(f"host  cpu {_pct(host.cpu_pct)} of {host.cpu_count} cores  "
                     f"mem {human_memory(host.memory_used_bytes)} / {human_memory(host.memory_total_bytes)}"
                     f"  load {_num(host.load_1m)}  net rx {_rate(host.net_rx_bytes_per_s)} "
                     f"tx {_rate(host.net_tx_bytes_per_s)}  disk r {_rate(host.disk_read_bytes_per_s)} "
                     f"w {_rate(host.disk_write_bytes_per_s)}")
    lines.append(_gpu_text(snapshot.gpus))
    if snapshot.endpoints:
        lines.append(endpoints_table(snapshot.endpoints))
    if any(model.replicas > 1 for model in snapshot.models):
        lines.append(models_table(snapshot.models))
    if snapshot.fleet is not None:
        lines.append(_fleet_text(snapshot.fleet))
    return "\n".join(lines)


def _fleet_text(fleet: Any) -> str:
    if fleet.status != "ok":
        return f"fleet  {fleet.status}: {fleet.reason or ''}".rstrip()
    rows = [(d.host, d.index, d.name, _pct(d.utilization_pct),
             f"{human_memory(d.memory_used_bytes)} / {human_memory(d.memory_total_bytes)}",
             _unit(d.temperature_c, "C"), _unit(d.power_w, "W")) for d in fleet.gpus]
    serving = [(s.label_dict.get("model_name") or s.label_dict.get("job"), s.label_dict.get("instance"),
                _num(s.points[-1][1]) if s.points else None) for s in fleet.serving]
    text = table(("HOST", "GPU", "NAME", "UTIL", "MEMORY", "TEMP", "POWER"), rows) if rows \
        else "fleet  no DCGM GPUs in Prometheus"
    if serving:
        text += "\n" + table(("MODEL", "INSTANCE", "TOK/S"), serving)
    return text


def _gpu_text(gpus: Any) -> str:
    if gpus.status != "ok":
        return f"gpus  {gpus.status}: {gpus.reason or ''}".rstrip()
    rows = [(d.index, d.name, _pct(d.utilization_pct),
             f"{human_memory(d.memory_used_bytes)} / {human_memory(d.memory_total_bytes)}",
             _unit(d.temperature_c, "C"), _unit(d.power_w, "W"), len(d.processes))
            for d in gpus.devices]
    return table(("GPU", "NAME", "UTIL", "MEMORY", "TEMP", "POWER", "PROCS"), rows)


def endpoints_table(endpoints: Any) -> str:
    """One row per endpoint; below, the models an engine without counters (Ollama) holds."""
    rows = [(e.name, e.kind, e.status, _num(e.tokens_per_s), _num(e.requests_per_s),
             _num(e.running, 0), _num(e.waiting, 0), _pct(e.kv_cache_pct),
             _ms(e.ttft_p95_s), _ms(e.itl_p95_s), _ms(e.e2e_p95_s), e.reason)
            for e in endpoints]
    text = table(("ENDPOINT", "KIND", "STATUS", "TOK/S", "REQ/S", "RUN", "WAIT", "KV",
                  "TTFT95", "ITL95", "E2E95", "REASON"), rows)
    loaded = [(e.name, m.name, human_memory(m.size_bytes), human_memory(m.vram_bytes),
               m.expires_at) for e in endpoints for m in getattr(e, "loaded_models", ())]
    if loaded:
        text += "\n" + table(("ENDPOINT", "LOADED MODEL", "SIZE", "IN VRAM", "UNLOADS AT"), loaded)
    return text


def models_table(models: Any) -> str:
    """Replicas of one model merged (percentiles from summed buckets)."""
    rows = [(m.model, f"{m.replicas_up}/{m.replicas}", _num(m.tokens_per_s), _num(m.requests_per_s),
             _ms(m.ttft_p95_s), _ms(m.itl_p95_s), _ms(m.e2e_p95_s)) for m in models]
    return table(("MODEL", "UP", "TOK/S", "REQ/S", "TTFT95", "ITL95", "E2E95"), rows)


# One way to write a number (console.present), named for what these tables show.
def _pct(value: float | None) -> str:
    """A value already in percent (CPU, GPU utilization, KV cache): `42%`."""
    return present.number(value, 0, "%")


def _num(value: float | None, digits: int = 1) -> str:
    return present.number(value, digits)


def _unit(value: float | None, unit: str) -> str:
    return present.number(value, 0, f" {unit}")


def _rate(value: float | None) -> str:
    shown = present.size(value)
    return shown if shown == present.MISSING else f"{shown}/s"


def _ms(value: float | None) -> str:
    return present.seconds_ms(value)


# ---- endpoints --------------------------------------------------------------------------------


def list_command(args: argparse.Namespace, deck: Deck) -> int:
    endpoints = actions.list_endpoints(deck)

    def human() -> str:
        if not endpoints:
            return "no endpoints: add [[endpoints]] entries to deck.toml (see sample_configs/)"
        rows = [(e.name, e.kind, e.url, e.model, "yes" if e.verify_tls else "no", f"{e.timeout_s:g} s",
                 _key_source(e)) for e in endpoints]
        return table(("NAME", "KIND", "URL", "MODEL", "TLS VERIFY", "TIMEOUT", "API KEY"), rows)

    emit(args.json, "endpoints.list", {"endpoints": [e.to_dict() for e in endpoints]}, human)
    return 0


def _key_source(endpoint: actions.EndpointInfo) -> str | None:
    if endpoint.api_key_env:
        return f"env {endpoint.api_key_env}"
    if endpoint.api_key_file:
        return f"file {endpoint.api_key_file}"
    return None


def check_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.check_endpoints(deck, actions.CheckEndpointsRequest(tuple(args.names),
                                                                         args.window))
    def human() -> str:
        if not result.endpoints:
            return "no endpoints: add [[endpoints]] entries to deck.toml (see sample_configs/)"
        text = endpoints_table(result.endpoints)
        if any(model.replicas > 1 for model in result.models):
            text += "\n" + models_table(result.models)
        return text

    emit(args.json, "endpoints.check", result.to_dict(), human)
    return 0 if result.all_reachable else 1


def discover_command(args: argparse.Namespace, deck: Deck) -> int:
    result = actions.discover_endpoints(deck, actions.DiscoverRequest(add=args.add))

    def human() -> str:
        if not result.engines:
            return "no serving engines found on this box"
        rows = [(e.engine, e.kind, e.url, e.pid, ", ".join(e.models[:3]) or None,
                 e.configured_as or "new") for e in result.engines]
        text = table(("ENGINE", "KIND", "URL", "PID", "MODELS", "IN DECK.TOML"), rows)
        if not result.entries:
            return text + "\nevery engine found is in deck.toml already"
        if result.added:
            return text + f"\nadded {len(result.entries)} endpoint(s) to {result.config_file}"
        return text + f"\n\n# for {result.config_file} (or run with --add):\n" + \
            discovered_toml(result.entries)

    emit(args.json, "endpoints.discover", result.to_dict(), human)
    return 0


def discovered_toml(entries: Any) -> str:
    import tomlkit

    return tomlkit.dumps({"endpoints": [dict(entry) for entry in entries]}).rstrip("\n")
