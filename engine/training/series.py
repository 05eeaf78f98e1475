"""Smoothing of training curves. A STUB of the one function the headless `jobs metrics` needs;
the console's Loss pane work (issue 18, branch trainview) owns this module and its full version
(adaptive span, time-weighted EMA, run alignment) replaces this file on merge."""

from __future__ import annotations

import math
from collections.abc import Sequence


def ema(values: Sequence[float], span: float) -> list[float]:
    """Debiased exponential moving average (pandas' ewm(span=..., adjust=True)); span <= 1
    returns the values unchanged; a value that is not finite passes through."""
    if span <= 1:
        return [float(value) for value in values]
    decay = 1.0 - 2.0 / (span + 1.0)
    weighted_sum = weight = 0.0
    smoothed: list[float] = []
    for value in map(float, values):
        weighted_sum *= decay
        weight *= decay
        if not math.isfinite(value):
            smoothed.append(value)
            continue
        weighted_sum += value
        weight += 1.0
        smoothed.append(weighted_sum / weight)
    return smoothed
