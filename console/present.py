"""How values read to people: units, dates, durations, and the details views as sections.

Engine-free and UI-free (it imports neither textual nor rich nor the engine), so the console's
details screens and the CLI's text output can share it: a value a person reads is formatted
here, once. Every function takes the plain values the engine hands out (dicts from `to_dict()`,
numbers, None) and returns strings; nothing here returns or shows a Python repr: None is `-`,
a dict is `key=value` pairs, a sequence is comma separated.

A details view is a list of Sections: a title plus either label/value pairs or a table with
headers (the compression report: parent, result, change side by side). `sections_text` renders
them as plain text for a terminal without the console.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MISSING = "-"


# ---- units ------------------------------------------------------------------------------------


def size(value: float | None, separator: str = " ") -> str:
    """Bytes on disk in decimal units, as `ls -h --si` and model cards write them: `138.5 MB`."""
    return _scaled(value, 1000.0, ("B", "kB", "MB", "GB", "TB", "PB"), separator)


def memory(value: float | None, separator: str = " ") -> str:
    """Memory in binary units, as nvidia-smi and nvitop show it: an 80 GB H100 is `79.6 GiB`."""
    return _scaled(value, 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB"), separator)


def _scaled(value: float | None, base: float, units: Sequence[str], separator: str) -> str:
    if not _finite(value):
        return MISSING
    amount = float(value)  # type: ignore[arg-type]
    for unit in units:
        if abs(amount) < base or unit == units[-1]:
            return f"{amount:.0f}{separator}{unit}" if unit == units[0] else \
                f"{amount:.1f}{separator}{unit}"
        amount /= base
    return MISSING  # not reached: the last unit returns


def count(value: float | None) -> str:
    """Parameter and token counts: `134.5M`."""
    if not _finite(value):
        return MISSING
    amount = float(value)  # type: ignore[arg-type]
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(amount) >= threshold:
            return f"{amount / threshold:.1f}{suffix}"
    return f"{amount:.0f}"


def number(value: Any, digits: int = 1, suffix: str = "") -> str:
    if isinstance(value, bool) or not _finite(value):
        return MISSING
    return f"{float(value):.{digits}f}{suffix}"


def percent(fraction: float | None, digits: int = 0) -> str:
    """0.42 -> `42%`."""
    return MISSING if not _finite(fraction) else f"{float(fraction) * 100:.{digits}f}%"  # type: ignore[arg-type]


def slo_attainment(slo: Any) -> str:
    """The share of requests that met every [slo] bound (SloStats.joint), rounded down so that
    `100%` means none missed: `97%`; empty with no [slo], `-` with no request in the window."""
    if slo is None:
        return ""
    joint = slo.get("joint") if isinstance(slo, Mapping) else getattr(slo, "joint", None)
    if not _finite(joint):
        return MISSING
    return f"{math.floor(float(joint) * 100 + 1e-9):.0f}%"  # type: ignore[arg-type]


def seconds_ms(value: float | None) -> str:
    """Latencies: `126 ms`, `1.42 s`."""
    if not _finite(value):
        return MISSING
    seconds = float(value)  # type: ignore[arg-type]
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def duration(value: float | None) -> str:
    """ETAs and elapsed times: `45s`, `12m05s`, `3h07m`."""
    if not _finite(value):
        return MISSING
    total = max(0, int(value))  # type: ignore[arg-type]
    if total >= 3600:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    if total >= 60:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total}s"


def when(timestamp: float | None, seconds: bool = False) -> str:
    """A moment in local time: `2026-11-25 19:47` (with `:05` seconds when asked)."""
    if not _finite(timestamp):
        return MISSING
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M",
                         time.localtime(float(timestamp)))  # type: ignore[arg-type]


def clock(timestamp: float | None) -> str:
    """A moment of today, for narrow columns: `19:47:05`."""
    return MISSING if not _finite(timestamp) else time.strftime(
        "%H:%M:%S", time.localtime(float(timestamp)))  # type: ignore[arg-type]


def ratio(value: float | None) -> str:
    """A result / parent ratio: `x0.51`."""
    return MISSING if not _finite(value) else f"x{float(value):.2f}"  # type: ignore[arg-type]


def signed_percent(value: float | None) -> str:
    return MISSING if not _finite(value) else f"{float(value):+.1f}%"  # type: ignore[arg-type]


ARCHITECTURE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "Model")


def architecture(value: Any) -> str:
    """One spelling of a model's architecture: an import records config.json's model_type
    (`llama`), a compressed or fine-tuned child its class (`LlamaForCausalLM`); both read
    `llama` (`GPT2LMHeadModel` reads `gpt2`)."""
    if not isinstance(value, str) or not value:
        return MISSING
    for suffix in ARCHITECTURE_SUFFIXES:
        if value.endswith(suffix) and len(value) > len(suffix):
            return value[: -len(suffix)].lower()
    return value.lower()


def version_ref(model: str | None, version: Any) -> str:
    """A parent as the full reference a person can type back: `smollm2@1`, never `1`."""
    if version in (None, ""):
        return MISSING
    return f"{model}@{version}" if model else str(version)


def short_job_id(job_id: str) -> str:
    """`finetune-20261125-193823-2f182e` -> `2f182e`: the random tail tells jobs apart; the
    details view and `modeldeck jobs list` give the whole id."""
    tail = job_id.rsplit("-", 1)[-1]
    if tail != job_id and len(tail) >= 4:
        return tail
    return job_id if len(job_id) <= 12 else job_id[-12:]


def home_path(path: str, home: str | None = None) -> str:
    """A path under the user's home directory as `~/...`."""
    import os

    home = home if home is not None else os.path.expanduser("~")
    if home and home != "/" and (path == home or path.startswith(home.rstrip("/") + "/")):
        return "~" + path[len(home.rstrip("/")):]
    return path


def plain(value: Any) -> str:
    """Any value a person reads, never a repr: None `-`, floats with 4 significant digits,
    dicts `key=value`, sequences comma separated."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return MISSING if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={plain(item)}" for key, item in value.items()
                         if item not in (None, "", (), [])) or MISSING
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(plain(item) for item in value) or MISSING
    return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- sections: what a details view shows ----------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A titled block: label/value pairs (`pairs`) or a table (`headers` and `rows`)."""

    title: str
    pairs: tuple[tuple[str, str], ...] = ()
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    note: str = ""

    @property
    def is_table(self) -> bool:
        return bool(self.headers)


@dataclass(frozen=True)
class Details:
    title: str
    sections: tuple[Section, ...] = field(default_factory=tuple)


def pairs(items: Iterable[tuple[str, Any]]) -> tuple[tuple[str, str], ...]:
    """Label/value pairs, values made plain; rows with nothing to say are left out."""
    shown = []
    for label, value in items:
        text = value if isinstance(value, str) else plain(value)
        if text and text != MISSING:
            shown.append((label, text))
    return tuple(shown)


# Rows of the compression report: (label, key in parent/result, formatter, key in change, formatter)
REPORT_ROWS: tuple[tuple[str, str, Any, str, Any], ...] = (
    ("perplexity", "perplexity", lambda v: number(v, 2), "perplexity_pct", signed_percent),
    ("decode tokens/s", "decode_tokens_per_s", lambda v: number(v, 1), "decode_speedup", ratio),
    ("time to first token", "ttft_s", seconds_ms, "ttft_ratio", ratio),
    ("size on disk", "size_bytes", size, "size_ratio", ratio),
    ("peak memory generating", "peak_memory_bytes", memory, "peak_memory_ratio", ratio),
    ("parameters", "param_count", count, "param_ratio", ratio),
    ("linear weight bytes", "linear_weight_bytes", size, "linear_weight_ratio", ratio),
)
REPORT_HEADERS = ("", "parent", "result", "change")


def compression_rows(report: Mapping[str, Any]) -> tuple[tuple[str, str, str, str], ...]:
    """The compression report, parent and result side by side with the change (tolerant of
    missing keys: an older report lacks some measures)."""
    parent = _mapping(report.get("parent"))
    result = _mapping(report.get("result"))
    change = _mapping(report.get("change"))
    rows = []
    for label, key, shown, change_key, change_shown in REPORT_ROWS:
        if key not in parent and key not in result:
            continue
        rows.append((label, shown(parent.get(key)), shown(result.get(key)),
                     change_shown(change.get(change_key))))
    return tuple(rows)


def compression_section(report: Mapping[str, Any]) -> Section:
    verdict = report.get("verdict")
    reason = report.get("verdict_reason")
    note = f"verdict: {verdict}" + (f" ({reason})" if reason else "") if verdict else ""
    method = report.get("method")
    title = f"compression report ({method})" if method else "compression report"
    return Section(title, headers=REPORT_HEADERS, rows=compression_rows(report), note=note)


def finetune_section(metrics: Mapping[str, Any]) -> Section | None:
    """A fine-tuned version's eval loss against its parent's on the same eval data."""
    loss, parent_loss = metrics.get("eval_loss"), metrics.get("parent_eval_loss")
    if not _finite(loss):
        return None
    rows = [("eval loss", number(parent_loss, 4), number(loss, 4),
             signed_percent(100.0 * (loss - parent_loss) / parent_loss)
             if _finite(parent_loss) and parent_loss else MISSING)]
    if _finite(metrics.get("perplexity")):
        parent_ppl = (math.exp(float(parent_loss)) if _finite(parent_loss)  # type: ignore[arg-type]
                      and float(parent_loss) < 50 else None)  # type: ignore[arg-type]
        rows.append(("perplexity", number(parent_ppl, 2), number(metrics["perplexity"], 2),
                     signed_percent(100.0 * (metrics["perplexity"] - parent_ppl) / parent_ppl)
                     if parent_ppl else MISSING))
    return Section("fine-tune result", headers=REPORT_HEADERS, rows=tuple(rows))


def model_details(data: Mapping[str, Any]) -> Details:
    """`models show` data (engine ModelDetails.to_dict()) as a details view."""
    metrics = _mapping(data.get("metrics"))
    lineage = _mapping(data.get("lineage"))
    files = data.get("files") or ()
    overview = Section("version", pairs([
        ("status", data.get("status")), ("kind", data.get("kind")),
        ("format", data.get("weight_format")), ("architecture", architecture(data.get("architecture"))),
        ("parent", version_ref(data.get("model"), data.get("parent_version"))),
        ("parameters", count(data.get("param_count"))), ("size", size(data.get("size_bytes"))),
        ("created", when(data.get("created_at"))), ("produced by", data.get("produced_by")),
        ("source", data.get("source")), ("aliases", data.get("aliases")),
        ("serving on", data.get("deployed_on") or "nothing"),
        ("versions of this model", data.get("all_versions")),
    ]))
    sections = []  # what decides a deploy first: the report against the parent
    report = metrics.get("compression")
    if isinstance(report, Mapping):
        sections.append(compression_section(report))
    tuned = finetune_section(metrics)
    if tuned is not None:
        sections.append(tuned)
    sections.append(overview)
    plain_metrics = [(key.replace("_", " "), value) for key, value in sorted(metrics.items())
                     if key != "compression" and not isinstance(value, Mapping)]
    if plain_metrics:
        sections.append(Section("metrics", pairs(plain_metrics)))
    if lineage:
        sections.append(Section("lineage", pairs(lineage_items(lineage))))
    if files:
        sections.append(Section("files", headers=("file", "size", "sha256"), rows=tuple(
            (str(entry.get("name", MISSING)), size(entry.get("size_bytes")),
             str(entry.get("sha256", ""))[:12]) for entry in files if isinstance(entry, Mapping))))
    return Details(str(data.get("ref") or "version"), tuple(sections))


def lineage_items(lineage: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Lineage keys as words; training settings are a long dict, kept to one line per key."""
    items: list[tuple[str, Any]] = []
    for key, value in lineage.items():
        label = key.replace("_", " ")
        if isinstance(value, Mapping):
            items.extend((f"{label}: {inner.replace('_', ' ')}", inner_value)
                         for inner, inner_value in value.items() if inner_value not in (None, ""))
        elif key.endswith("sha256") and isinstance(value, str):
            items.append((label, value[:12]))
        else:
            items.append((label, value))
    return items


def sections_text(details: Details) -> str:
    """The details view as plain text (the CLI's `show` output can reuse it)."""
    lines = [details.title]
    for section in details.sections:
        lines += ["", section.title]
        if section.is_table:
            lines += _table_lines(section.headers, section.rows)
        else:
            width = max((len(label) for label, _ in section.pairs), default=0)
            lines += [f"  {label.ljust(width)}  {value}" for label, value in section.pairs]
        if section.note:
            lines.append(f"  {section.note}")
    return "\n".join(lines)


NUMERIC_CELL = re.compile(r"^([-+x]?[0-9.]|-$)")  # numbers, ratios, changes: right-aligned


def _table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[index]) for row in cells) for index in range(len(headers))]
    numeric = [index > 0 and bool(rows) and all(NUMERIC_CELL.match(row[index]) for row in rows)
               for index in range(len(headers))]
    return ["  " + "  ".join(value.rjust(width) if right else value.ljust(width)
                             for value, width, right in zip(row, widths, numeric)).rstrip()
            for row in cells]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# ---- details of the console's rows (the fields of console.data's rows, as a mapping) -----------


def job_details(job: Mapping[str, Any]) -> Details:
    progress = job.get("progress")
    steps = (f"{job['step']} of {job['max_steps']}" if _finite(job.get("step"))
             and _finite(job.get("max_steps")) else job.get("step"))
    return Details(f"job {job.get('job_id', '')}", (Section("job", pairs([
        ("id", job.get("job_id")), ("kind", job.get("kind")), ("model", job.get("model")),
        ("state", job.get("state")), ("reason", job.get("detail")),
        ("progress", percent(progress) if _finite(progress) else None), ("step", steps),
        ("last loss", number(job.get("loss"), 4)), ("ETA", duration(job.get("eta_s"))),
        ("started", when(job.get("started_at"))),
        ("attempt", job.get("attempt") if (job.get("attempt") or 1) > 1 else None),
        ("produced", job.get("result")),
    ])),))


def job_source(spec: Mapping[str, Any]) -> str | None:
    """What a job starts from: a fine-tune's `parent`, a compression's `reference`."""
    value = spec.get("parent") or spec.get("reference") or spec.get("model")
    return str(value) if value else None


def job_report(job: Mapping[str, Any], data: Mapping[str, Any]) -> Details:
    """`jobs show`: the engine's job (to_dict()) and what its events say (last progress, last
    eval), with the result as the side-by-side table its kind has (compression report, or the
    fine-tune's eval loss against the parent's)."""
    spec = _mapping(job.get("spec"))
    result = _mapping(job.get("result"))
    progress = _mapping(data.get("last_progress"))
    last_eval = _mapping(data.get("last_eval"))
    attempt = job.get("attempt") if _finite(job.get("attempt")) else 1
    sections = [Section("job", pairs([
        ("kind", job.get("kind")), ("state", job.get("state")), ("reason", job.get("reason")),
        ("from", job_source(spec)), ("method", spec.get("method")),
        ("produced", result.get("version")),
        ("attempt", attempt if attempt > 1 else None),  # type: ignore[operator]
        ("created", when(job.get("created_at"), seconds=True)),
        ("directory", home_path(str(job["directory"])) if job.get("directory") else None),
    ]))]
    if progress:
        sections.append(Section("progress", pairs(progress_items(progress) + [
            ("last eval loss", number(last_eval.get("eval_loss"), 4)),
            ("data wait", number(progress.get("data_wait_pct"), 0, "%")),
            ("diagnosis", _mapping(data.get("diagnosis")).get("line"))])))
    report = result.get("report")
    if isinstance(report, Mapping):
        sections.insert(0, compression_section(report))
    tuned = finetune_section(_mapping(result.get("metrics")))
    if tuned is not None:
        sections.insert(0, tuned)
    return Details(f"job {job.get('id', '')}", tuple(sections))


def progress_items(progress: Mapping[str, Any]) -> list[tuple[str, Any]]:
    step, most = progress.get("step"), progress.get("max_steps")
    return [("phase", progress.get("phase")),
            ("step", f"{step} of {most}" if _finite(step) and _finite(most) else plain(step)),
            ("loss", number(progress.get("loss"), 4)),
            ("learning rate", f"{progress['learning_rate']:.2e}"
             if _finite(progress.get("learning_rate")) else None),
            ("tokens/s", number(progress.get("tokens_per_s"), 0)),
            ("ETA", duration(progress.get("eta_s")) if _finite(progress.get("eta_s")) else None)]


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
    if not rows and _finite(endpoint.get("ttft_p95_s")):
        rows = (("time to first token", MISSING, seconds_ms(endpoint["ttft_p95_s"]), MISSING),)
    sections = [overview]
    if rows:
        sections.append(Section("latency", headers=("", "p50", "p95", "p99"), rows=rows,
                                note="percentiles over the last poll interval"))
    history = [value for value in endpoint.get("tokens_history") or () if _finite(value)]
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
    history = [value for value in gpu.get("utilization_history") or () if _finite(value)]
    sections = [Section("GPU", pairs([
        ("index", str(gpu.get("index"))), ("name", gpu.get("name")),
        ("utilization", number(gpu.get("utilization_pct"), 0, "%")),
        ("memory", f"{memory(used)} of {memory(total)}" if _finite(total) else memory(used)),
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


def failures(failed: float | None, requests: float | None) -> str:
    """Failed requests in the window: `0 err`, `3 err` (`-` when unknown)."""
    return MISSING if not _finite(failed) or not _finite(requests) else f"{float(failed):.0f} err"  # type: ignore[arg-type]


def eval_verdict(evaluation: Mapping[str, Any] | None) -> str:
    """`eval gate PROMOTE (perplexity 515 against live 522)`."""
    if not evaluation:
        return "no eval gate"
    return (f"eval gate {evaluation.get('verdict')} (perplexity "
            f"{number(evaluation.get('candidate_ppl'), 1)} against live "
            f"{number(evaluation.get('live_ppl'), 1)})")
