"""How results leave the CLI: one JSON document with a schema field, or text for people."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from engine import SCHEMA


def emit(json_mode: bool, kind: str, payload: dict[str, Any],
         human: Callable[[], str] | None = None) -> None:
    if json_mode:
        document = {"schema": SCHEMA, "kind": kind, **payload}
        sys.stdout.write(json.dumps(document, default=_json_default) + "\n")
    elif human is not None:
        text = human()
        if text:
            sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def emit_error(json_mode: bool, kind: str, message: str, exit_code: int) -> None:
    sys.stderr.write(f"modeldeck: error: {message}\n")
    if json_mode:
        emit(True, "error", {"error": {"kind": kind, "message": message, "exit_code": exit_code}})


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip()
             for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return str(value)


def human_bytes(size: int | None, separator: str = " ") -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            digits = 0 if unit == "B" else 1
            return f"{value:.{digits}f}{separator}{unit}"
        value /= 1000
    return f"{value:.1f}{separator}TB"


def human_count(count: int | None) -> str:
    if count is None:
        return "-"
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= threshold:
            return f"{count / threshold:.1f}{suffix}"
    return str(count)


def human_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
