"""How values read to people: units, dates, durations, and the details views as sections.

Engine-free and UI-free (it imports neither textual nor rich nor the engine), so the console's
details screens and the CLI's text output can share it: a value a person reads is formatted
here, once. Every function takes the plain values the engine hands out (dicts from `to_dict()`,
numbers, None) and returns strings; nothing here returns or shows a Python repr: None is `-`,
a dict is `key=value` pairs, a sequence is comma separated.

A details view is a list of Sections: a title plus either label/value pairs or a table with
headers (the compression report: parent, result, change side by side). `sections_text` renders
them as plain text for a terminal without the console. The views themselves are built beside
it: console.present_models (versions), console.present_jobs (jobs), console.present_live
(endpoints, GPUs, events, rollouts).
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
    if not finite(value):
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
    if not finite(value):
        return MISSING
    amount = float(value)  # type: ignore[arg-type]
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(amount) >= threshold:
            return f"{amount / threshold:.1f}{suffix}"
    return f"{amount:.0f}"


def number(value: Any, digits: int = 1, suffix: str = "") -> str:
    if isinstance(value, bool) or not finite(value):
        return MISSING
    return f"{float(value):.{digits}f}{suffix}"


def percent(fraction: float | None, digits: int = 0) -> str:
    """0.42 -> `42%`."""
    return MISSING if not finite(fraction) else f"{float(fraction) * 100:.{digits}f}%"  # type: ignore[arg-type]


def slo_attainment(slo: Any) -> str:
    """The share of requests that met every [slo] bound (SloStats.joint), rounded down so that
    `100%` means none missed: `97%`; empty with no [slo], `-` with no request in the window."""
    if slo is None:
        return ""
    joint = slo.get("joint") if isinstance(slo, Mapping) else getattr(slo, "joint", None)
    if not finite(joint):
        return MISSING
    return f"{math.floor(float(joint) * 100 + 1e-9):.0f}%"  # type: ignore[arg-type]


def seconds_ms(value: float | None) -> str:
    """Latencies: `126 ms`, `1.42 s`."""
    if not finite(value):
        return MISSING
    seconds = float(value)  # type: ignore[arg-type]
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def duration(value: float | None) -> str:
    """ETAs and elapsed times: `45s`, `12m05s`, `3h07m`."""
    if not finite(value):
        return MISSING
    total = max(0, int(value))  # type: ignore[arg-type]
    if total >= 3600:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    if total >= 60:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total}s"


def when(timestamp: float | None, seconds: bool = False) -> str:
    """A moment in local time: `2026-11-25 19:47` (with `:05` seconds when asked)."""
    if not finite(timestamp):
        return MISSING
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M",
                         time.localtime(float(timestamp)))  # type: ignore[arg-type]


def clock(timestamp: float | None) -> str:
    """A moment of today, for narrow columns: `19:47:05`."""
    return MISSING if not finite(timestamp) else time.strftime(
        "%H:%M:%S", time.localtime(float(timestamp)))  # type: ignore[arg-type]


def ratio(value: float | None) -> str:
    """A result / parent ratio: `x0.51`."""
    return MISSING if not finite(value) else f"x{float(value):.2f}"  # type: ignore[arg-type]


def signed_percent(value: float | None) -> str:
    return MISSING if not finite(value) else f"{float(value):+.1f}%"  # type: ignore[arg-type]


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


def finite(value: Any) -> bool:
    """A real, finite number (bools and NaN are not)."""
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
    numeric = [index > 0 and bool(rows) and all(NUMERIC_CELL.match(row[index]) for row in rows)
               for index in range(len(headers))]
    return aligned([list(headers), *[list(row) for row in rows]], numeric, indent="  ")


def aligned(cells: Sequence[Sequence[str]], right: Sequence[bool], indent: str = "") -> list[str]:
    """Rows of text cells (the header first) as lines in columns two spaces apart; a column
    marked `right` is right-aligned. The one table layout of the CLI and the details views."""
    widths = [max(len(row[index]) for row in cells) for index in range(len(right))]
    return [indent + "  ".join(value.rjust(width) if flush else value.ljust(width)
                               for value, width, flush in zip(row, widths, right)).rstrip()
            for row in cells]


def as_mapping(value: Any) -> Mapping[str, Any]:
    """A record's nested dict, or an empty one where an older or foreign record has none."""
    return value if isinstance(value, Mapping) else {}


def failures(failed: float | None, requests: float | None) -> str:
    """Failed requests in the window: `0 err`, `3 err` (`-` when unknown)."""
    return MISSING if not finite(failed) or not finite(requests) else f"{float(failed):.0f} err"  # type: ignore[arg-type]

