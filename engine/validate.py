"""Validation at the boundary: one function per kind of value a user types.

The CLI, the console's forms, deck.toml and the HTTP routes all call these, so a value is judged
the same way wherever it enters, and a bad one fails with one line naming it (BadInput, exit 2)
before anything is written. Light on purpose: no torch, no pydantic at import.
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath

from engine.errors import BadInput

# SQLite integers and most of our counters are signed 64-bit: a larger number cannot name anything.
MAX_INT64 = 2**63 - 1
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
# A content digest (blob names, pushed file lists, upload routes): lowercase hex sha256.
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# Model, alias and target names: each becomes a file or directory name somewhere under the deck.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# What engine.jobs.new_job_id makes; an id becomes a directory name under jobs/.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_int(what: str, text: str | int, minimum: int | None = None,
              maximum: int | None = MAX_INT64) -> int:
    """An integer in [minimum, maximum], written with ASCII digits only ('²' and '٣' are not)."""
    if isinstance(text, bool):
        raise BadInput(f"{what} must be a whole number, not {text}")
    if isinstance(text, int):
        value = text
    else:
        stripped = str(text).strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", stripped):
            raise BadInput(f"{what} must be a whole number, not {_shown(text)}")
        value = int(stripped)
    if minimum is not None and value < minimum:
        raise BadInput(f"{what} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise BadInput(f"{what} must be at most {maximum}, not {_shown(value)}")
    return value


def parse_float(what: str, text: str | float, minimum: float | None = None,
                maximum: float | None = None, exclusive_minimum: bool = False) -> float:
    """A finite float (no inf, no nan) within the bounds."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BadInput(f"{what} must be a number, not {_shown(text)}") from None
    if not math.isfinite(value):
        raise BadInput(f"{what} must be a finite number, not {_shown(text)}")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        relation = "greater than" if exclusive_minimum else "at least"
        raise BadInput(f"{what} must be {relation} {minimum:g}, not {value:g}")
    if maximum is not None and value > maximum:
        raise BadInput(f"{what} must be at most {maximum:g}, not {value:g}")
    return value


def parse_percent(what: str, text: str | float, allow_zero: bool = True) -> float:
    """A share of traffic written as a percentage ('20%' or '20'), returned as a fraction 0..1."""
    shown = str(text).strip()
    value = parse_float(what, shown.removesuffix("%").strip() if isinstance(text, str) else text,
                        0.0, 100.0, exclusive_minimum=not allow_zero)
    return value / 100.0


def parse_percent_steps(what: str, text: str) -> tuple[float, ...]:
    """'5,25,50,100': strictly increasing percentages ending at 100, as fractions."""
    parts = [part for part in str(text).split(",")]
    if not str(text).strip() or len(parts) > 20:
        raise BadInput(f"{what} must be 1 to 20 comma-separated percentages ending at 100")
    steps = tuple(parse_percent(what, part, allow_zero=False) for part in parts)
    if any(later <= earlier for earlier, later in zip(steps, steps[1:])):
        raise BadInput(f"{what} must increase step by step, not {_shown(text)}")
    if steps[-1] != 1.0:
        raise BadInput(f"{what} must end at 100 (the candidate takes all traffic last)")
    return steps


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(what: str, text: str | float, minimum: float = 0.0,
                   maximum: float = 7 * 86400.0) -> float:
    """Seconds from '60s', '2m', '500ms', '1h' or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return parse_float(what, text, minimum, maximum)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*", str(text))
    if match is None:
        raise BadInput(f"{what} must be a duration such as 60s, 2m or 500ms, not {_shown(text)}")
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    return parse_float(what, seconds, minimum, maximum)


def parse_port(text: str | int, allow_zero: bool = True) -> int:
    """A TCP port; 0 asks the system for a free one."""
    return parse_int("port", text, 0 if allow_zero else 1, 65535)


def parse_device(text: str, cuda_count: int | None = None) -> str:
    """`auto`, `cpu`, `mps`, `cuda` or `cuda:N`, and only a device this machine has.

    The syntax check is free; a CUDA device is counted without importing torch (see
    cuda_device_count), unless the caller knows the count (engine.modelio.devices, whose
    described machines make the policy testable); `mps` asks torch.
    """
    device = str(text).strip().lower()
    if not DEVICE_PATTERN.match(device):
        raise BadInput(f"device must be auto, cpu, cuda or cuda:N, not {_shown(text)}")
    if device.startswith("cuda"):
        count = cuda_device_count() if cuda_count is None else cuda_count
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            raise BadInput(f"device {device}: this machine has no CUDA device "
                           "(use --device cpu or auto)")
        if index >= count:
            raise BadInput(f"device {device}: this machine has {count} CUDA device(s) "
                           f"(cuda:0 to cuda:{count - 1})")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise BadInput("device mps: not available on this machine")
    return device


def check_name(kind: str, name: str) -> str:
    """A name that becomes a path component (a model, an alias, a target)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise BadInput(f"invalid {kind} {_shown(name)}: use letters, digits, '.', '_' or '-' "
                       "(max 64)")
    return name


def parse_job_id(job_id: str) -> str:
    """A job id as `modeldeck jobs list` shows them; anything else never becomes a path."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        raise BadInput(f"invalid job id {_shown(job_id)}: expected letters, digits, '.', '_' or "
                       "'-' (at most 128), as `modeldeck jobs list` shows them")
    return job_id


def cuda_device_count() -> int:
    """CUDA devices on this machine: torch's count when torch is already loaded, else NVML's
    (the driver's library: milliseconds, and the console's process must never import torch)."""
    import sys

    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library, no GPU: no CUDA device  # noqa: BLE001
        return 0


def safe_relative_name(what: str, name: str) -> str:
    """A file name inside a directory: relative, no '..', no empty or '.' parts, no NUL.

    Names that arrive from outside (a pushed version's file list, an upload route) become paths
    under a directory of ours; this keeps them there. `inside()` checks the resolved path too.
    """
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise BadInput(f"{what} {_shown(name)} is not a valid relative file name")
    pure = PurePosixPath(name)
    if pure.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise BadInput(f"{what} {_shown(name)} must stay inside its directory "
                       "(no absolute path, no '..')")
    if len(name) > 1024 or any(len(part.encode()) > 255 for part in pure.parts):
        raise BadInput(f"{what} {_shown(name)} is too long")
    return name


def inside(directory: Path, name: str, what: str = "file name") -> Path:
    """directory / name, refused unless it resolves inside directory (symlinks included)."""
    safe_relative_name(what, name)
    root = Path(directory).resolve()
    candidate = (root / name).resolve()
    if candidate != root and root not in candidate.parents:
        raise BadInput(f"{what} {_shown(name)} resolves outside {root}")
    return candidate


def unique_names(entries: tuple, what: str = "name") -> tuple:
    """A settings list whose entries' `name`s are unique (a pydantic validator's body: the
    ValueError becomes deck.toml's one-line error naming the list)."""
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate {what} {duplicates[0]!r}")
    return entries


def _shown(value: object, limit: int = 60) -> str:
    """A value as it may appear in a one-line error: quoted and cut, never a huge repr."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text
