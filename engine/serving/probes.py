"""How a gate judges one prompt's answer: shared by the server's own gate (engine.serving.host)
and the HTTP gates of the other targets (engine.targets.gate), which sit above it."""

from __future__ import annotations


def judge_text(text: str, latency_s: float, bound_s: float | None) -> str:
    """Why a gate prompt's answer fails ("" when it passes): empty, or slower than the bound."""
    if not text.strip():
        return "empty completion"
    if bound_s is not None and latency_s > bound_s:
        return f"took {latency_s:.3f}s, slower than the {bound_s}s bound"
    return ""
