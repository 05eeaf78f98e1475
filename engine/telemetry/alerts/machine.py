"""The alert state machine: pure, clock given by the caller, one state per (rule, subject).

    clear --holds--> pending --held for_s--> FIRED (firing) --clear for suppress_s--> RESOLVED
      ^                |  clear                 |    ^ holds again inside suppress_s: a flap,
      +----------------+                        +----+ counted, not announced

An alert fires on a transition, once its condition has held for `for_s` (0: at once), and
resolves on the way back, but only once the condition has stayed clear for `suppress_s`: a
condition that flaps inside that window stays one firing alert, not a stream of fire/resolve
announcements. A subject that disappears (a job ends, an endpoint is removed) counts as clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

Key = tuple[str, str]  # (rule name, subject id such as "gpu:0" or "endpoint:vllm-a")


@dataclass(frozen=True)
class KeyState:
    phase: Literal["pending", "firing"]
    since: float  # pending: when the condition began to hold; firing: when it fired
    clear_since: float | None = None  # firing: when the condition last became clear
    flaps: int = 0  # times it held again while firing, within the suppression window


@dataclass(frozen=True)
class Transition:
    key: Key
    state: Literal["fired", "resolved"]
    at: float
    fired_at: float
    flaps: int = 0


def advance(state: KeyState | None, holds: bool, now: float, for_s: float,
            suppress_s: float) -> tuple[KeyState | None, Literal["fired", "resolved"] | None]:
    """One observation of one (rule, subject): its next state and what to announce, if anything."""
    if state is None or state.phase == "pending":
        if not holds:
            return None, None
        began = now if state is None else state.since
        if now - began >= for_s:
            return KeyState("firing", now), "fired"
        return KeyState("pending", began), None
    if holds:
        if state.clear_since is None:
            return state, None
        return replace(state, clear_since=None, flaps=state.flaps + 1), None
    cleared = now if state.clear_since is None else state.clear_since
    if now - cleared >= suppress_s:
        return None, "resolved"
    return replace(state, clear_since=cleared), None


@dataclass(frozen=True)
class Timing:
    for_s: float
    suppress_s: float


class AlertMachine:
    """Every (rule, subject)'s state; `step` takes one round of observations."""

    def __init__(self) -> None:
        self.states: dict[Key, KeyState] = {}

    def step(self, observed: Mapping[Key, bool], timings: Mapping[str, Timing],
             now: float) -> list[Transition]:
        """`observed`: each (rule, subject) seen this round and whether its condition holds;
        keys in a firing or pending state that were not seen count as clear. Rules absent from
        `timings` (removed from deck.toml) are forgotten without an announcement."""
        transitions: list[Transition] = []
        for key in list(dict.fromkeys([*observed, *self.states])):
            timing = timings.get(key[0])
            if timing is None:
                self.states.pop(key, None)
                continue
            before = self.states.get(key)
            after, announced = advance(before, observed.get(key, False), now, timing.for_s,
                                       timing.suppress_s)
            if after is None:
                self.states.pop(key, None)
            else:
                self.states[key] = after
            if announced == "fired":
                transitions.append(Transition(key, "fired", now, now))
            elif announced == "resolved" and before is not None:
                transitions.append(Transition(key, "resolved", now, before.since, before.flaps))
        return transitions

    def restore(self, firing: Iterable[tuple[Key, float]]) -> None:
        """Alerts another process announced and never resolved (from the alert log): firing
        here too, so taking over evaluation does not announce them again."""
        for key, fired_at in firing:
            self.states[key] = KeyState("firing", fired_at)

    @property
    def firing(self) -> tuple[Key, ...]:
        return tuple(key for key, state in self.states.items() if state.phase == "firing")
