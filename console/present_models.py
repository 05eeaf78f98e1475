"""Model versions as details views: `models show`, the compression report and a fine-tune's
result against its parent (console.present's formatters and Sections)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from console.present import (MISSING, Details, Section, architecture, as_mapping, count, finite,
                             memory, number, pairs, ratio, seconds_ms, signed_percent, size,
                             version_ref, when)

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
    parent = as_mapping(report.get("parent"))
    result = as_mapping(report.get("result"))
    change = as_mapping(report.get("change"))
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
    if not finite(loss):
        return None
    rows = [("eval loss", number(parent_loss, 4), number(loss, 4),
             signed_percent(100.0 * (loss - parent_loss) / parent_loss)
             if finite(parent_loss) and parent_loss else MISSING)]
    if finite(metrics.get("perplexity")):
        parent_ppl = (math.exp(float(parent_loss)) if finite(parent_loss)  # type: ignore[arg-type]
                      and float(parent_loss) < 50 else None)  # type: ignore[arg-type]
        rows.append(("perplexity", number(parent_ppl, 2), number(metrics["perplexity"], 2),
                     signed_percent(100.0 * (metrics["perplexity"] - parent_ppl) / parent_ppl)
                     if parent_ppl else MISSING))
    return Section("fine-tune result", headers=REPORT_HEADERS, rows=tuple(rows))


def model_details(data: Mapping[str, Any]) -> Details:
    """`models show` data (engine ModelDetails.to_dict()) as a details view."""
    metrics = as_mapping(data.get("metrics"))
    lineage = as_mapping(data.get("lineage"))
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

