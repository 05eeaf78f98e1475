"""The two ways an action can fail, each mapped to one exit code by the CLI."""

from __future__ import annotations


class DeckError(Exception):
    """Base class: the action ran and failed (exit 1)."""

    exit_code = 1
    kind = "failed"


class BadInput(DeckError):
    """The request itself is wrong: unknown model, unreadable file, bad option (exit 2).

    Raised before anything is written, so a bad input never leaves half-written state.
    """

    exit_code = 2
    kind = "bad-input"


class ActionFailed(DeckError):
    """The input was fine but the action did not succeed (failed gate, unreachable target)."""


def brief(error: BaseException, limit: int = 160, named: bool = False) -> str:
    """An exception as one short line a client may read (whitespace folded, bounded);
    named: prefixed with its type ("RuntimeError: device lost"), where the type says something."""
    text = " ".join(str(error).split())[:limit] or type(error).__name__
    return f"{type(error).__name__}: {text}" if named else text
