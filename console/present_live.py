"""The live panes' rows as people read them: endpoint, GPU and event details, an audit row's
gate checks, and a rollout's step line, version weights and eval verdict."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from console.present import (MISSING, Details, Section, finite, memory, number, pairs, percent,
                             plain, seconds_ms, when)


def endpoint_details(endpoint: Mapping[str, Any]) -> Details:
    overview = Section("endpoint", pairs([
        ("name", endpoint.get("name")), ("kind", endpoint.get("kind")),
        ("url", endpoint.get("url")), ("state", endpoint.get("status")),
        ("reason", endpoint.get("reason")),
        ("generated tokens/s", number(endpoint.get("tokens_per_s"), 1)),
        ("requests/s", number(endpoint.get("requests_per_s"), 2)),
        ("running / waiting", f"{plain(endpoint.get('running'))} / {plain(endpoint.get('waiting'))}"),
        ("KV cache", number(endpoint.get("kv_cache_pct"), 0, "%")),
        ("last poll", when(endpoint.get("checked_at"), seconds=True)),
    ]))
    latency = endpoint.get("latency") or ()
    rows = tuple((str(measure), seconds_ms(p50), seconds_ms(p95), seconds_ms(p99))
                 for measure, p50, p95, p99 in latency)
    if not rows and finite(endpoint.get("ttft_p95_s")):
        rows = (("time to first token", MISSING, seconds_ms(endpoint["ttft_p95_s"]), MISSING),)
    sections = [overview]
    if rows:
        sections.append(Section("latency", headers=("", "p50", "p95", "p99"), rows=rows,
                                note="percentiles over the last poll interval"))
    history = [value for value in endpoint.get("tokens_history") or () if finite(value)]
    if history:
        sections.append(Section("tokens/s history", pairs([
            ("points", str(len(history))), ("lowest", number(min(history), 1)),
            ("highest", number(max(history), 1)), ("latest", number(history[-1], 1))])))
    return Details(f"endpoint {endpoint.get('name', '')}", tuple(sections))


def event_details(event: Mapping[str, Any]) -> Details:
    arguments = event.get("arguments") or ()
    sections = [Section("event", pairs([
        ("when", when(event.get("at"), seconds=True)), ("level", event.get("level")),
        ("action", event.get("verb")), ("result", event.get("result")),
        ("by", event.get("user")), ("reason", event.get("reason")),
        ("from", "the audit log" if event.get("origin") == "audit" else "this console"),
        ("text", event.get("text")),
    ]))]
    if arguments:
        sections.append(Section("arguments", pairs((str(key), value) for key, value in arguments)))
    detail = event.get("detail")
    if detail:
        sections.append(detail_section(str(detail)))
    return Details("event", tuple(sections))


def detail_section(detail: str) -> Section:
    """An audit row's detail: a gate report (JSON) as its checks, anything else as text."""
    import json

    try:
        data = json.loads(detail)
    except ValueError:
        return Section("detail", pairs([("detail", detail)]))
    if isinstance(data, Mapping) and isinstance(data.get("checks"), list):
        # The engine's one check shape (engine.targets.base.GateCheck, and the server's own
        # gate, which writes the same keys): `probe`, `ok`, then status, latency and detail.
        rows = tuple((str(check.get("probe", MISSING)),
                      "passed" if check.get("ok") else "failed",
                      plain({key: value for key, value in check.items()
                             if key not in ("probe", "ok") and value not in (None, "")}))
                     for check in data["checks"] if isinstance(check, Mapping))
        return Section("gate checks", headers=("check", "result", "detail"), rows=rows,
                       note=f"reason: {data['reason']}" if data.get("reason") else "")
    if isinstance(data, Mapping):
        return Section("detail", pairs((str(key).replace("_", " "), value) for key, value in data.items()))
    return Section("detail", pairs([("detail", plain(data))]))


def gpu_details(gpu: Mapping[str, Any]) -> Details:
    used, total = gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")
    history = [value for value in gpu.get("utilization_history") or () if finite(value)]
    sections = [Section("GPU", pairs([
        ("index", str(gpu.get("index"))), ("name", gpu.get("name")),
        ("utilization", number(gpu.get("utilization_pct"), 0, "%")),
        ("memory", f"{memory(used)} of {memory(total)}" if finite(total) else memory(used)),
        ("temperature", number(gpu.get("temperature_c"), 0, " °C")),
        ("power", number(gpu.get("power_w"), 0, " W")),
        ("utilization, recent mean", number(sum(history) / len(history), 0, "%") if history else None),
    ]))]
    processes = gpu.get("processes") or ()
    if processes:
        sections.append(Section("processes", headers=("pid", "name", "memory"), rows=tuple(
            (str(process.get("pid")), str(process.get("name") or MISSING),
             memory(process.get("memory_bytes"))) for process in processes)))
    return Details(f"GPU {gpu.get('index')}", tuple(sections))


# ---- rollouts (the Throughput pane's step line and version rows) -------------------------------

ROLLOUT_HOLDING = re.compile(r"holding (\d+)s of (\d+)s, (\d+) requests")
ROLLOUT_WAITING = re.compile(r"waiting for traffic: (\d+) of (\d+) requests")


def rollout_step(rollout: Mapping[str, Any]) -> str:
    """`step 2 of 4 (25%)`, or `shadow 20%` before the first step."""
    step, steps = int(rollout.get("step", -1)), rollout.get("steps") or ()
    if step < 0:
        return f"shadow {percent(rollout.get('shadow'))}"
    return f"step {step + 1} of {len(steps)} ({percent(rollout.get('weight'))})"


def rollout_line(rollout: Mapping[str, Any], short: bool = False) -> str:
    """What the rollout does now, from its state: `rollout tiny@2: step 2 of 4 (25%), holding
    40 s of 60 s, 3 requests`; short (a narrow pane): `rollout 2/4 25%: hold 40/60 s`."""
    message, status = str(rollout.get("message") or ""), str(rollout.get("status") or "")
    holding, waiting = ROLLOUT_HOLDING.search(message), ROLLOUT_WAITING.search(message)
    if status == "paused":
        detail, brief = "paused", "paused"
    elif holding:
        held, hold, requests = holding.groups()
        detail = f"holding {held} s of {hold} s, {requests} requests"
        brief = f"hold {held}/{hold} s"
    elif waiting:
        detail = f"waiting for traffic: {waiting[1]} of {waiting[2]} requests"
        brief = f"wait {waiting[1]}/{waiting[2]} req"
    else:
        detail = brief = message.split(": ", 1)[-1] if message.startswith("step ") else message
    if not short:
        return f"rollout {rollout.get('candidate')}: {rollout_step(rollout)}, {detail}"
    step, steps = int(rollout.get("step", -1)), rollout.get("steps") or ()
    where = "shadow" if step < 0 else f"{step + 1}/{len(steps)} {percent(rollout.get('weight'))}"
    return f"rollout {where}: {brief}"


def version_weight(ref: str, rollout: Mapping[str, Any]) -> str:
    """A version's share of new requests: the candidate's weight, live the rest (in the shadow
    phase the candidate only gets copies: `shadow 20%`)."""
    weight = float(rollout.get("weight") or 0.0)
    if ref == rollout.get("candidate"):
        return f"sh {percent(rollout.get('shadow'))}" if int(rollout.get("step", -1)) < 0 \
            else percent(weight)
    return percent(1.0 - weight)


def eval_verdict(evaluation: Mapping[str, Any] | None) -> str:
    """`eval gate PROMOTE (perplexity 515 against live 522)`."""
    if not evaluation:
        return "no eval gate"
    return (f"eval gate {evaluation.get('verdict')} (perplexity "
            f"{number(evaluation.get('candidate_ppl'), 1)} against live "
            f"{number(evaluation.get('live_ppl'), 1)})")
