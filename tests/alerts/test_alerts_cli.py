"""`modeldeck alerts`, `modeldeck monitor` and deck.toml [[alerts]] at the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest


HOT_RULE = """
[[alerts]]
name = "hot"
when = "gpu.temperature_c > 85"
severity = "critical"
"""


def hot_replay(path: Path) -> Path:
    path.write_text(json.dumps({"devices": [{"index": 0, "name": "replayed", "temperature_c": 91.0}]}) + "\n")
    return path


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "deck.toml"
    config.write_text(text)
    return config


def test_watch_fires_and_alerts_json_lists_it(cli, deck_home: Path, tmp_path: Path):
    write_config(deck_home, HOT_RULE)
    watched = cli("watch", "--local", "--count", "1", "--gpu-replay",
                            str(hot_replay(tmp_path / "hot.jsonl")))
    assert watched.code == 0, watched  # --local: GPUs shown, alerts not evaluated
    assert cli("alerts", "--json").json["alerts"] == []
    watched = cli("watch", "--count", "2", "--interval", "0.05", "--gpu-replay",
                            str(tmp_path / "hot.jsonl"))
    assert watched.code == 0, watched
    assert watched.stdout.count("ALERT fired: hot: gpu 0") == 1, watched.stdout
    listing = cli("alerts", "--json")
    assert listing.code == 0, listing
    document = listing.json
    assert (document["schema"], document["kind"], document["since"]) == ("modeldeck/v1", "alerts", None)
    [fired] = document["alerts"]
    assert {"t", "at", "state", "rule", "subject", "kind", "severity", "when", "values", "message",
            "bell"} <= set(fired)
    assert (fired["state"], fired["rule"], fired["subject"], fired["kind"], fired["severity"],
            fired["values"]) == ("fired", "hot", "gpu:0", "gpu", "critical",
                                 {"gpu.temperature_c": 91.0})
    assert document["firing"] == [fired]
    newer = cli("alerts", "--json", "--since", "2030-01-01T00:00").json
    assert newer["alerts"] == [] and newer["firing"] == [fired]
    assert len(cli("alerts", "--json", "--since", "10m").json["alerts"]) == 1
    text = cli("alerts")
    assert "hot" in text.stdout and "gpu:0" in text.stdout and "firing now: hot (gpu:0)" in text.stdout


@pytest.mark.parametrize("since", ["yesterday", "2h ago", "-5m", "2026-13-45", "9" * 30 + "d", ""])
def test_a_bad_since_is_exit_2(cli, since: str):
    result = cli("alerts", "--since", since)
    assert result.code == 2, result
    assert result.stderr.count("\n") == 1 and "--since" in result.stderr


@pytest.mark.parametrize("rule, problem", [
    ('name = "x"\nwhen = "gpu.temprature_c > 85"', "alerts.0: rule 'x': when 'gpu.temprature_c > 85' gpu has no field 'temprature_c'"),
    ('name = "x"\nwhen = "gpu.temperature_c >"', "rule 'x': when 'gpu.temperature_c >' ends too early"),
    ('name = "x"\nwhen = "__import__(\'os\')"', "rule 'x': when"),
    ('name = "x"\nwhen = "gpu.index > 1 and job.step > 1"', "mixes subjects gpu and job"),
    ('name = "x"', "rule 'x' needs `when`"),
    ('name = "x"\nwhen = "gpu.index > 1"\nwebhook = "ftp://h"', "alerts.0.webhook"),
    ('name = "x"\nwhen = "gpu.index > 1"\nfor_s = -1', "alerts.0.for_s"),
    ('name = "x"\nwhen = "gpu.index > 1"\nsinks = 3', "alerts.0.sinks"),
    ('name = "a b"\nwhen = "gpu.index > 1"', "alerts.0.name"),
    ('name = "x"\nwhen = "gpu.index > 1"\ncommand = [""]', "alerts.0.command"),
    ('name = "x"\nwhen = "gpu.index > 1"\n[[alerts]]\nname = "x"\nwhen = "gpu.index > 2"',
     "duplicate rule name 'x'"),
])
def test_a_bad_rule_is_exit_2_naming_it(cli, deck_home: Path, rule: str, problem: str):
    write_config(deck_home, f"[[alerts]]\n{rule}\n")
    result = cli("alerts")
    assert result.code == 2, result
    assert result.stderr.count("\n") == 1 and problem in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_rules_lists_defaults_and_overrides(cli, deck_home: Path):
    write_config(deck_home, '[[alerts]]\nname = "gpu-hot"\nbell = true\nwebhook_secret_env = "T"\n'
                            'webhook = "https://u:p@hooks.example/T0/B1/secret-path"\n'
                            '[[alerts]]\nname = "loss-spike"\nenabled = false\n')
    rules = {rule["name"]: rule for rule in cli("alerts", "--rules", "--json").json["rules"]}
    assert rules["gpu-hot"]["when"] == "gpu.temperature_c > 85" and rules["gpu-hot"]["bell"]
    assert rules["gpu-hot"]["webhook_secret"] == "env T"
    assert rules["gpu-hot"]["webhook"] == "https://hooks.example/..."
    assert "loss-spike" not in rules and "endpoint-down" in rules


def test_monitor_detaches_shows_in_status_and_stops(cli, deck_home: Path):
    write_config(deck_home, HOT_RULE + '\n[telemetry]\ninterval_s = 0.1\n')
    started = cli("monitor", "--detach", "--json")
    try:
        assert started.code == 0, started
        pid = started.json["pid"]
        assert started.json["state"] == "running"
        status = cli("status", "--json").json
        assert status["monitor"]["state"] == "running" and status["monitor"]["pid"] == pid
        again = cli("monitor", "--detach")
        assert again.code == 1 and f"pid {pid}" in again.stderr
    finally:
        stopped = cli("monitor", "--stop", "--json")
    assert stopped.code == 0 and stopped.json["state"] == "stopped", stopped
    assert cli("status", "--json").json["monitor"]["state"] == "not-running"
    assert cli("monitor", "--stop", "--json").json["state"] == "not-running"
