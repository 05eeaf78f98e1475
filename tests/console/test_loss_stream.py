"""console.loss_stream.LossStream: every numeric field of a job's progress and eval events becomes a
signal the Loss pane can show, read incrementally (a long run is not re-sorted on each read)."""

from __future__ import annotations

import math
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from console.loss_stream import LossStream
from console.sources import EngineSource
from engine import jobs
from tests.console import loss_runs


def test_every_numeric_field_is_a_signal_and_bookkeeping_is_not():
    stream = LossStream()
    stream.add({"t": 10.0, "type": "progress", "step": 1, "max_steps": 9, "epoch": 0.1,
                "loss": 2.0, "step_time_s": 1.5, "memory_bytes": 3 << 30, "kv_hits_per_s": 4,
                "tokens_seen": 512, "elapsed_s": 1.5, "eta_s": 12.0, "note": "warm-up",
                "flag": True, "grad_norm": math.nan})
    stream.add({"t": 11.0, "type": "eval", "step": 1, "eval_loss": 2.2, "perplexity": 9.0})
    stream.add({"t": 11.5, "type": "checkpoint", "step": 1, "path": "checkpoint-1"})
    series = stream.series("job-1")
    assert series.signal_names == ("loss", "eval_loss", "step_time_s", "memory_bytes",
                                   "eval_perplexity", "kv_hits_per_s")
    assert series.curve("memory_bytes").values == (float(3 << 30),)
    assert series.clock.tokens == (512.0,) and series.clock.times == (10.0,)
    assert series.checkpoints == (1.0,) and series.max_steps == 9 and series.eta_s == 12.0


def test_checkpoint_folders_count_for_jobs_without_checkpoint_events(tmp_path):
    (tmp_path / "checkpoint-40").mkdir()
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "other").mkdir()
    assert LossStream().series("job", tmp_path).checkpoints == (8.0, 40.0)


progress_steps = st.lists(st.integers(0, 60), min_size=1, max_size=40)


@settings(max_examples=50, deadline=None)
@given(progress_steps, st.integers(1, 39))
def test_read_in_pieces_equals_read_at_once(steps, split):
    """A resumed attempt repeats steps (later values win), whatever the order they come in."""
    events = [{"t": float(index), "type": "progress", "step": step, "loss": float(index),
               "tokens_seen": step * 10} for index, step in enumerate(steps)]
    pieces, whole = LossStream(), LossStream()
    for event in events[:split]:
        pieces.add(event)
    pieces.series("job")
    for event in events[split:]:
        pieces.add(event)
    for event in events:
        whole.add(event)
    expected = {}
    for index, step in enumerate(steps):
        expected[step] = float(index)
    assert pieces.series("job") == whole.series("job")
    series = whole.series("job")
    assert series.train_steps == tuple(float(step) for step in sorted(expected))
    assert series.train_loss == tuple(expected[step] for step in sorted(expected))
    assert series.clock.steps == series.train_steps


def test_the_engine_source_reads_a_recorded_run_from_a_deck(deck):
    """The recorded fixture, copied into a real job directory, reads back the same through the
    console's engine source as through the test helper."""
    job = jobs.start_job(deck, "selftest", {"steps": 1})
    deadline = time.monotonic() + 60
    while not jobs.get_job(deck, job.id).terminal and time.monotonic() < deadline:
        time.sleep(0.1)  # the worker is done with its file before the test writes it
    directory = jobs.job_directory(deck, job.id)
    (directory / "events.jsonl").write_bytes(
        (loss_runs.RUNS / loss_runs.CURRENT / "events.jsonl").read_bytes())
    source = EngineSource(deck)
    try:
        series = source.loss(job.id)
    finally:
        source.close()
    recorded = loss_runs.recorded(loss_runs.CURRENT)
    assert series.signal_names == recorded.signal_names
    assert series.curve("grad_norm") == recorded.curve("grad_norm")
    assert series.checkpoints == recorded.checkpoints
