"""The fire / flap / resolve state machine, over generated sequences of observations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.telemetry.alerts.machine import AlertMachine, Timing

KEY = ("rule", "gpu:0")

# (seconds since the previous observation, whether the condition holds)
observations = st.lists(st.tuples(st.floats(0.1, 30.0), st.booleans()), max_size=60)
timings = st.builds(Timing, st.sampled_from([0.0, 1.0, 5.0, 20.0]),
                    st.sampled_from([0.0, 2.0, 10.0, 45.0]))


def run(sequence, timing):
    machine, now, announced = AlertMachine(), 0.0, []
    for gap, holds in sequence:
        now += gap
        for transition in machine.step({KEY: holds}, {"rule": timing}, now):
            announced.append((transition.state, now, transition))
    return announced, machine


def timeline(sequence):
    """(time, holds) of each observation."""
    times, now = [], 0.0
    for gap, holds in sequence:
        now += gap
        times.append((now, holds))
    return times


@settings(max_examples=200, deadline=None)
@given(observations, timings)
def test_fires_and_resolves_alternate(sequence, timing):
    announced, machine = run(sequence, timing)
    states = [state for state, _, _ in announced]
    assert states == ["fired", "resolved"] * (len(states) // 2) + ["fired"] * (len(states) % 2)
    assert (KEY in machine.firing) == (states[-1:] == ["fired"])


@settings(max_examples=200, deadline=None)
@given(observations, timings)
def test_fires_only_after_holding_for_s(sequence, timing):
    """A fire at time t: the condition held at every observation in [t - for_s, t]."""
    announced, _ = run(sequence, timing)
    times = timeline(sequence)
    for state, at, _ in announced:
        if state != "fired":
            continue
        held = [holds for moment, holds in times if at - timing.for_s <= moment <= at]
        assert held and all(held)
        began = max((moment for moment, holds in times if moment <= at and not holds), default=0.0)
        first_true = min(moment for moment, holds in times if began < moment <= at)
        assert at - first_true >= timing.for_s


@settings(max_examples=200, deadline=None)
@given(observations, timings)
def test_resolves_only_after_clear_for_suppress_s(sequence, timing):
    """A resolve at t: the condition was clear at every observation in [t - suppress_s, t],
    and a flap (holding again inside the window) is counted, never announced."""
    announced, _ = run(sequence, timing)
    times = timeline(sequence)
    for state, at, transition in announced:
        if state == "resolved":
            clear = [holds for moment, holds in times if at - timing.suppress_s <= moment <= at]
            assert clear and not any(clear)
            assert transition.fired_at < at


def test_flapping_inside_the_window_is_one_alert():
    machine, timing = AlertMachine(), {"rule": Timing(for_s=2.0, suppress_s=10.0)}
    pattern = [True, True, True] + [False, True] * 10 + [False] * 12
    announced = [(t.state, t.flaps) for now, holds in enumerate(pattern)
                 for t in machine.step({KEY: holds}, timing, float(now))]
    assert announced == [("fired", 0), ("resolved", 10)]


def test_a_subject_that_disappears_resolves_and_a_removed_rule_is_forgotten():
    machine = AlertMachine()
    timing = {"rule": Timing(0.0, 0.0)}
    assert [t.state for t in machine.step({KEY: True}, timing, 0.0)] == ["fired"]
    assert [t.state for t in machine.step({}, timing, 1.0)] == ["resolved"]
    machine.step({KEY: True}, timing, 2.0)
    assert machine.step({}, {}, 3.0) == [] and machine.states == {}


def test_restored_alerts_are_not_announced_again():
    machine = AlertMachine()
    machine.restore([(KEY, 5.0)])
    timing = {"rule": Timing(0.0, 0.0)}
    assert machine.step({KEY: True}, timing, 6.0) == []
    [resolved] = machine.step({KEY: False}, timing, 7.0)
    assert (resolved.state, resolved.fired_at) == ("resolved", 5.0)
