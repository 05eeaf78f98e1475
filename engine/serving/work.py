"""What the scheduler and its callers exchange: sampling parameters, token events, the metrics
observer and the two refusals (a full queue, a retired scheduler). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class QueueFull(Exception):
    """The waiting queue is at its limit: the server answers 429."""


class SchedulerClosed(Exception):
    """The scheduler no longer accepts work (its version is being retired)."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: always generate max_tokens (vLLM's extension)


@dataclass(frozen=True)
class TokenEvent:
    """What a sequence reports to its consumer: new text, or the end with its reason."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Observer(Protocol):
    """Metrics hooks, called from the scheduler thread."""

    def prompt_tokens(self, count: int) -> None: ...
    def token(self, first: bool, seconds_since_previous: float) -> None: ...
    def finished(self, outcome: str, seconds: float, completion_tokens: int) -> None: ...
    def step(self, batch_size: int, running: int, waiting: int) -> None: ...
    # Optional: kv_cache_usage(fraction) is called each iteration when the observer has it.


class NullObserver:
    def prompt_tokens(self, count: int) -> None: ...
    def token(self, first: bool, seconds_since_previous: float) -> None: ...
    def finished(self, outcome: str, seconds: float, completion_tokens: int) -> None: ...
    def step(self, batch_size: int, running: int, waiting: int) -> None: ...
