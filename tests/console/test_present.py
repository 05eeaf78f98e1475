"""console.present_live reads the engine's records as they are written."""

from __future__ import annotations

import json

from console.present_live import detail_section
from engine.targets.base import GateCheck, GateReport


def test_a_gate_report_shows_each_check_with_its_real_result():
    """The gate writes `probe`/`ok`; the details view once read `name`/`passed`, so every check
    of every gate showed as `-` and `failed`, passed ones included."""
    report = GateReport(False, (GateCheck("Hello", True, 200, 0.12, ""),
                                GateCheck("The capital of France is", False, 200, 3.5, "too slow")))
    section = detail_section(json.dumps(report.to_dict()))
    assert [row[:2] for row in section.rows] == [("Hello", "passed"),
                                                 ("The capital of France is", "failed")]
    assert "too slow" in section.rows[1][2] and "None" not in repr(section.rows)


def test_jobs_logs_text_is_for_people():
    """`jobs logs` printed other events as JSON and ETAs as `3725s`."""
    from console.commands.job_cmds import _event_line

    progress = _event_line({"type": "progress", "step": 3, "max_steps": 10, "loss": 2.5,
                            "eta_s": 3725.2})
    assert progress.endswith("eta 1h02m"), progress
    registered = _event_line({"type": "registered", "version": "tiny@2",
                              "metrics": {"eval_loss": 3.14159265, "perplexity": None}})
    assert "{" not in registered and '"' not in registered and "3.142" in registered, registered
