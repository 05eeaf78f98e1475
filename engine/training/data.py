"""Training data: read and validate a dataset file without torch, so a bad or empty dataset is
refused before a job starts.

Formats, one per file (the first usable row decides):
  .txt                      plain text; paragraphs (separated by blank lines) are examples
  JSONL {"text": ...}       causal LM on the whole text
  JSONL {"prompt", "completion"}   loss on the completion only
  JSONL {"messages": [{"role", "content"}, ...]}   rendered with the tokenizer's chat template
  JSONL {"text", "label"}   sequence classification (encoder models)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BadInput
from engine.registry.blobs import file_sha256

FORMATS = ("text", "prompt-completion", "chat", "classification")
BAD_ROW_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class Example:
    line: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class Dataset:
    path: Path
    format: str
    examples: tuple[Example, ...]
    skipped: tuple[tuple[int, str], ...] = ()
    sha256: str = ""
    labels: tuple[str, ...] = field(default=())  # classification label names, sorted

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "rows": len(self.examples),
                "skipped": len(self.skipped), "sha256": self.sha256,
                "first_skipped": [f"{self.path}:{line}: {why}" for line, why in self.skipped[:5]]}


def load_dataset(path: Path, on_bad_row: str = "error") -> Dataset:
    """Every usable row, or BadInput naming the file and line of the first bad one."""
    if on_bad_row not in BAD_ROW_POLICIES:
        raise BadInput(f"--on-bad-row must be one of {', '.join(BAD_ROW_POLICIES)}, not {on_bad_row!r}")
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise BadInput(f"data file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    skipped: list[tuple[int, str]]
    if path.suffix == ".txt":
        fmt, examples, skipped = "text", _paragraphs(text), []
    else:
        fmt, examples, skipped = _jsonl_rows(path, text, on_bad_row)
    if not examples:
        detail = f" ({len(skipped)} bad rows skipped)" if skipped else ""
        raise BadInput(f"{path}: no usable rows{detail}; nothing to train on")
    labels = tuple(sorted({str(e.fields["label"]) for e in examples})) if fmt == "classification" else ()
    return Dataset(path, fmt, tuple(examples), tuple(skipped), file_sha256(path), labels)


def _paragraphs(text: str) -> list[Example]:
    examples: list[Example] = []
    current: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            examples.append(Example(start, {"text": "\n".join(current)}))
            current = []
    if current:
        examples.append(Example(start, {"text": "\n".join(current)}))
    return examples


def _jsonl_rows(path: Path, text: str, on_bad_row: str) -> tuple[str, list[Example], list]:
    fmt: str | None = None
    examples: list[Example] = []
    skipped: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row_format, fields = _parse_row(line)
            if fmt is not None and row_format != fmt:
                raise ValueError(f"a {row_format} row in a {fmt} dataset")
        except ValueError as error:
            if on_bad_row == "error":
                raise BadInput(f"{path}:{number}: {error} (pass --on-bad-row skip to skip bad rows)") from None
            skipped.append((number, str(error)))
            continue
        fmt = fmt or row_format
        examples.append(Example(number, fields))
    return fmt or "text", examples, skipped


def _parse_row(line: str) -> tuple[str, dict[str, Any]]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise ValueError("a row must be a JSON object")
    if "messages" in row:
        return "chat", {"messages": _messages(row["messages"])}
    if "prompt" in row or "completion" in row:
        return "prompt-completion", {"prompt": _string(row, "prompt", allow_empty=True),
                                     "completion": _string(row, "completion")}
    if "text" in row:
        if "label" in row:
            label = row["label"]
            if not isinstance(label, (str, int)) or isinstance(label, bool):
                raise ValueError("'label' must be a string or an integer")
            return "classification", {"text": _string(row, "text"), "label": label}
        return "text", {"text": _string(row, "text")}
    raise ValueError("expected a 'text', 'prompt'+'completion' or 'messages' field")


def _string(row: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")
    if not allow_empty and not value.strip():
        raise ValueError(f"'{key}' is empty")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError("'messages' must be a non-empty list")
    messages = []
    for index, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise ValueError(f"messages[{index}] needs string 'role' and 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("'messages' has no assistant turn to learn from")
    return messages
