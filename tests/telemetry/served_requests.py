"""Requests recorded straight into a server's metrics (its scheduler's observer hooks)."""

from __future__ import annotations

from typing import Any


def serve(observer: Any, count: int, ttft_s: float, e2e_s: float) -> None:
    """`count` one-token requests, each with this time to first token and end-to-end time."""
    for _ in range(count):
        observer.token(True, ttft_s)
        observer.finished("stop", e2e_s, 1)
