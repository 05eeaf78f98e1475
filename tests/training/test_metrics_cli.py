"""`modeldeck jobs metrics|snapshot` over a recorded job (events written by the engine's own
writer, no worker), and the refusals: a bad id, metric or step is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import jobs
from engine.training.series import ema
from tests.conftest import run_modeldeck

STEPS = 30


@pytest.fixture
def recorded(deck_home: Path) -> str:
    """A finished fine-tune's events: progress every step, an eval every 10, a resumed attempt
    that repeats steps 21-22 (the later values win), a checkpoint at 20."""
    directory = deck_home / "jobs" / "finetune-recorded"
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps({"kind": "finetune", "spec": {}}))
    jobs.record_state(directory, "finished", "done", result={})
    for step in [*range(1, 23), 21, 22, *range(23, STEPS + 1)]:
        jobs.append_event(directory, "progress", step=step, loss=10.0 / step, learning_rate=1e-3,
                          grad_norm=0.5, tokens_per_s=100.0, samples_per_s=4.0,
                          step_time_s=0.1, memory_bytes=2e8, tokens_seen=64 * step)
        if step % 10 == 0:
            jobs.append_event(directory, "eval", step=step, eval_loss=5.0 / step, perplexity=1.5)
    jobs.append_event(directory, "checkpoint", step=20, path=str(directory / "checkpoint-20"))
    return "finetune-recorded"


def metrics(home: Path, *args: str):
    result = run_modeldeck("jobs", "metrics", *args, "--json", home=home)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_metrics_json_has_every_signal_raw_and_smoothed(deck_home, recorded):
    document = metrics(deck_home, recorded)
    assert document["kind"] == "jobs.metrics" and document["job"] == recorded
    assert {"loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s", "samples_per_s",
            "step_time_s", "memory_bytes"} <= set(document["metrics"])
    loss = document["metrics"]["loss"]
    assert [p["step"] for p in loss["points"]] == list(range(1, STEPS + 1))  # one point a step
    assert [p["value"] for p in loss["points"]] == pytest.approx([10.0 / s for s in range(1, STEPS + 1)])
    expected = ema([10.0 / s for s in range(1, STEPS + 1)], loss["smoothing"]["span"])
    assert [p["smoothed"] for p in loss["points"]] == pytest.approx(expected)
    assert [p["step"] for p in document["metrics"]["eval_loss"]["points"]] == [10, 20, 30]


def test_metrics_around_a_step_keeps_the_whole_run_smoothing(deck_home, recorded):
    whole = metrics(deck_home, recorded, "--metric", "loss")["metrics"]["loss"]["points"]
    near = metrics(deck_home, recorded, "--metric", "loss", "--around", "15", "--window", "2")
    assert list(near["metrics"]) == ["loss"] and (near["around"], near["window"]) == (15, 2)
    assert near["metrics"]["loss"]["points"] == [p for p in whole if 13 <= p["step"] <= 17]
    human = run_modeldeck("jobs", "metrics", recorded, "--metric", "loss", home=deck_home)
    assert human.code == 0 and "SMOOTHED" in human.stdout and "{" not in human.stdout


def test_snapshot_has_every_metric_at_the_step(deck_home, recorded):
    result = run_modeldeck("jobs", "snapshot", recorded, "--step", "20", "--json", home=deck_home)
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["kind"], document["step"]) == ("jobs.snapshot", 20)
    assert document["metrics"]["loss"] == pytest.approx(0.5)
    assert document["metrics"]["eval_loss"] == pytest.approx(0.25)
    assert document["metrics"]["memory_bytes"] == 2e8 and document["checkpoint"].endswith("-20")


@pytest.mark.parametrize("args, words", [
    (("metrics", "no-such-job"), "does not exist"),
    (("metrics", "RECORDED", "--metric", "los"), "unknown metric"),
    (("metrics", "RECORDED", "--around", "500"), "no step there"),
    (("metrics", "RECORDED", "--window", "3"), "--window needs --around"),
    (("metrics", "RECORDED", "--around", "-1"), "--around"),
    (("snapshot", "RECORDED", "--step", "31"), "nothing was logged"),
    (("snapshot", "RECORDED", "--step", "x"), "--step"),
    (("snapshot", "no-such-job", "--step", "1"), "does not exist"),
    (("stop", "RECORDED"), "finished"),
    (("checkpoint", "RECORDED"), "finished"),
    (("register-checkpoint", "RECORDED"), "no complete checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2(deck_home, recorded, args, words):
    args = tuple(recorded if a == "RECORDED" else a for a in args)
    result = run_modeldeck("jobs", *args, home=deck_home)
    assert result.code == 2, (result.stdout, result.stderr)
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
