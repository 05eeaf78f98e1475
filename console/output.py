"""How results leave the CLI: one JSON document with a schema field, or text for people."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from console import present
from engine import SCHEMA

MAX_ERROR_LENGTH = 1000  # characters of one error line; the rest of a huge value is cut


def emit(json_mode: bool, kind: str, payload: dict[str, Any],
         human: Callable[[], str] | None = None) -> None:
    if json_mode:
        document = {"schema": SCHEMA, "kind": kind, **payload}
        sys.stdout.write(json_line(document) + "\n")
    elif human is not None:
        text = human()
        if text:
            sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def json_line(document: Any) -> str:
    """Strict JSON on one line: NaN and ±Infinity are not JSON (JSON.parse and jq reject them),
    so a non-finite float becomes null, as anything unknown is."""
    return json.dumps(finite_only(document), allow_nan=False)


def finite_only(value: Any) -> Any:
    """A JSON-ready copy: non-finite floats -> None, objects with to_dict() expanded, tuples as
    lists, anything else not JSON -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(key): finite_only(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_only(item) for item in value]
    if hasattr(value, "to_dict"):
        return finite_only(value.to_dict())
    return str(value)


def emit_error(json_mode: bool, kind: str, message: str, exit_code: int) -> None:
    message = one_line(message)
    try:
        sys.stderr.write(f"modeldeck: error: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass  # nobody reads stderr any more; the exit code still says what happened
    if json_mode:
        emit(True, "error", {"error": {"kind": kind, "message": message, "exit_code": exit_code}})


def one_line(message: str) -> str:
    """An error is one line: line breaks and other control characters a user typed (a name,
    a path) are shown escaped instead of breaking it up; a huge value is cut."""
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    return line if len(line) <= MAX_ERROR_LENGTH else line[:MAX_ERROR_LENGTH] + "..."


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    return "\n".join(present.aligned(cells, [False] * len(headers)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return str(value)


def human_bytes(size: int | float | None, separator: str = " ") -> str:
    """Sizes on disk, as the console writes them (console.present: one spelling)."""
    return present.size(size, separator)


def human_memory(size: int | float | None) -> str:
    """GPU and host memory in binary units (GiB), as the console and nvidia-smi write them."""
    return present.memory(size)


def human_count(count: int | float | None) -> str:
    return present.count(count)


def human_time(timestamp: float | None) -> str:
    return present.when(timestamp, seconds=True)
