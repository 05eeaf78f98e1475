"""The `when` language: what it means, what it refuses, and that it is never Python."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.alert_settings import SUBJECT_FIELDS, parse_when
from engine.alert_settings.expression import ExpressionError


def holds(text: str, **fields: object) -> bool:
    return parse_when(text).holds(lambda parts: _nested(fields, parts))


def _nested(fields: dict, parts: tuple[str, ...]) -> object:
    value: object = fields
    for part in parts:
        value = value.get(part) if isinstance(value, dict) else None
    return value


@pytest.mark.parametrize("text, fields, expected", [
    ("gpu.temperature_c > 85", {"temperature_c": 90}, True),
    ("gpu.temperature_c > 85", {"temperature_c": 85}, False),
    ("gpu.temperature_c > 85", {"temperature_c": None}, False),  # unknown never fires
    ("gpu.temperature_c == null", {"temperature_c": None}, True),
    ("endpoint.state == 'down'", {"state": "down"}, True),
    ('endpoint.state != "down"', {"state": "up"}, True),
    ("endpoint.state > 3", {"state": "up"}, False),  # a string is not ordered against a number
    ("endpoint.slo.joint < 0.9", {"slo": {"joint": 0.5}}, True),
    ("endpoint.slo.joint < 0.9", {"slo": None}, False),
    ("job.non_finite", {"non_finite": True}, True),
    ("not job.non_finite", {"non_finite": False}, True),
    ("job.state == 'running' and job.seconds_since_step > 300",
     {"state": "running", "seconds_since_step": 301.5}, True),
    ("job.state == 'running' and job.seconds_since_step > 300",
     {"state": "failed", "seconds_since_step": 900}, False),
    ("job.loss > 1e3 or (job.step >= 10 and not job.loss <= -1.5)",
     {"loss": 2.0, "step": 10}, True),
    ("host.cpu_pct >= 0", {"cpu_pct": float("nan")}, False),
])
def test_meaning(text, fields, expected):
    assert holds(text, **fields) is expected


def test_subject_and_paths_are_known():
    parsed = parse_when("endpoint.slo.joint < 0.9 or endpoint.state == 'down'")
    assert parsed.subject == "endpoint"
    assert parsed.paths == (("slo", "joint"), ("state",))


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"),
    ("gpu.temprature_c > 85", "gpu has no field 'temprature_c'"),
    ("gpu.temperature_c > 85 and job.loss > 1", "mixes subjects gpu and job"),
    ("disk.free > 1", "unknown subject 'disk'"),
    ("gpu > 1", "'gpu' needs a field"),
    ("1 > 0", "names no field"),
    ("gpu.temperature_c >", "ends too early"),
    ("(gpu.temperature_c > 1", "'(' without its ')'"),
    ("gpu.temperature_c > 85 85", "unexpected '85'"),
    ("__import__('os').system('true')", "unexpected character '.'"),
    ("open('/etc/passwd')", "unknown subject 'open'"),
    ("gpu.temperature_c > 1; import os", "unexpected character ';'"),
    ("gpu.name == 'a' + 'b'", "unexpected character '+'"),
    ("not " * 40 + "gpu.index", "nests deeper"),
    ("(" * 40 + "gpu.index" + ")" * 40, "nests deeper"),
    ("gpu.index > " + "1" * 600, "longer than 500"),
])
def test_refusals_name_the_problem(text, problem):
    with pytest.raises(ExpressionError, match=None) as raised:
        parse_when(text)
    assert problem in str(raised.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="gpujobendtmaxc_.<>=!()'\" 0123456789andornotnull", max_size=60))
def test_any_text_parses_or_says_why(text):
    """Random text either parses or is an ExpressionError (never another exception)."""
    try:
        parsed = parse_when(text)
    except ExpressionError:
        return
    assert parsed.subject in SUBJECT_FIELDS
    assert isinstance(parsed.holds(lambda parts: None), bool)
