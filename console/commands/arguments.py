"""argparse `type=` functions built on engine.validate, so a flag is judged at the boundary.

A bad value fails while the command line is parsed: one line naming the flag, exit 2, before
the deck is opened or anything is written. The validators are the engine's (the same judgement
as deck.toml and the console's forms); this module only turns their BadInput into the
ArgumentTypeError argparse reports.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from engine import validate
from engine.errors import BadInput

Value = TypeVar("Value")
MAX_PATH_LENGTH = 4096  # PATH_MAX on Linux


def _adapted(check: Callable[[str], Value], name: str) -> Callable[[str], Value]:
    def convert(text: str) -> Value:
        try:
            return check(text)
        except BadInput as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def whole(flag: str, minimum: int | None = None, maximum: int | None = validate.MAX_INT64):
    """An integer flag in [minimum, maximum] (ASCII digits; at most a signed 64-bit value)."""
    return _adapted(lambda text: validate.parse_int(flag, text, minimum, maximum), "integer")


def number(flag: str, minimum: float | None = None, maximum: float | None = None,
           exclusive_minimum: bool = False):
    """A finite float flag within the bounds (nan and inf are refused)."""
    return _adapted(lambda text: validate.parse_float(flag, text, minimum, maximum,
                                                      exclusive_minimum), "number")


def device(flag: str = "--device"):
    """auto, cpu, mps, cuda, cuda:N, and only one this machine has."""
    def check(text: str) -> str:
        try:
            return validate.parse_device(text)
        except BadInput as error:  # "device cuda: ..." -> "--device cuda: ..."
            raise BadInput(flag + str(error).removeprefix("device")) from None

    return _adapted(check, "device")


def existing_file(flag: str):
    """A path that names a regular file (checked now, read later by the verb); as text, since
    the engine's specs are JSON."""
    def check(text: str) -> str:
        if not text or "\x00" in text:
            raise BadInput(f"{flag} needs a file name")
        path = Path(text).expanduser()
        try:
            if not path.is_file():
                reason = ("is a directory" if path.is_dir() else
                          "not a regular file" if path.exists() else "no such file")
                raise BadInput(f"{flag} {_cut(text)}: {reason}")
        except OSError as error:  # a name too long, a path through a file
            raise BadInput(f"{flag} {_cut(text)}: {error.strerror}") from None
        return str(path)

    return _adapted(check, "file")


def path_text(flag: str):
    """A path the verb will look at itself (a file or a directory): no NUL, not empty."""
    def check(value: str) -> str:
        if not value or "\x00" in value:
            raise BadInput(f"{flag} needs a path without NUL characters")
        if len(value) > MAX_PATH_LENGTH:
            raise BadInput(f"{flag} is too long ({len(value)} characters)")
        return value

    return _adapted(check, "path")


# A job id: the engine's one check, while parsing.
job_id = _adapted(validate.parse_job_id, "job id")


def text(flag: str, max_length: int = 1024):
    """Free text (a reason, a name): no NUL, bounded length."""
    def check(value: str) -> str:
        if "\x00" in value:
            raise BadInput(f"{flag} must not contain a NUL character")
        if len(value) > max_length:
            raise BadInput(f"{flag} is too long ({len(value)} characters, at most {max_length})")
        return value

    return _adapted(check, "text")


def _cut(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def percent(flag: str):
    """A share of traffic, '20%' or '20', as a fraction 0..1."""
    return _adapted(lambda value: validate.parse_percent(flag, value), "percent")


def percent_steps(flag: str):
    """'5,25,50,100': increasing percentages ending at 100, as fractions."""
    return _adapted(lambda value: validate.parse_percent_steps(flag, value), "steps")


def duration(flag: str):
    """'60s', '2m', '500ms' or plain seconds."""
    return _adapted(lambda value: validate.parse_duration(flag, value), "duration")
