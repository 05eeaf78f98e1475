"""The engine-backed source read from worker threads, as the app does: host CPU from any
thread, registry rows, and the loss of a real job's events.jsonl read incrementally."""

from __future__ import annotations

import threading
import time

from console.adapters import HostReader
from console.sources import EngineSource
from console.widgets.loss_pane import downsample
from engine import jobs


def in_new_thread(function):
    box = {}
    worker = threading.Thread(target=lambda: box.update(value=function()))
    worker.start()
    worker.join(30)
    return box["value"]


def test_host_cpu_is_measured_across_threads():
    reader = HostReader()
    in_new_thread(reader.read)
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # this process keeps a core busy for a while
        pass
    host = in_new_thread(reader.read)
    assert host.cpu_pct > 0, host
    assert host.memory_total_bytes > host.memory_used_bytes > 0
    assert len(host.cpu_history) == 2


def test_loss_follows_a_real_job_and_what_is_appended_later(deck):
    job = jobs.start_job(deck, "selftest", {"steps": 5})  # torch-free worker: loss = 1/step
    deadline = time.monotonic() + 60
    while not jobs.get_job(deck, job.id).terminal and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.get_job(deck, job.id).state == "finished"
    source = EngineSource(deck)
    first = in_new_thread(lambda: source.loss(job.id))
    assert first.train_steps == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert first.train_loss == tuple(1.0 / step for step in range(1, 6))
    directory = jobs.job_directory(deck, job.id)
    jobs.append_event(directory, "progress", step=6, max_steps=6, loss=0.1)
    jobs.append_event(directory, "eval", step=6, eval_loss=0.7)
    jobs.append_event(directory, "progress", step=3, max_steps=6, loss=9.0)  # a resume repeats
    later = in_new_thread(lambda: source.loss(None))  # None: the newest job
    assert later.job_id == job.id
    assert later.train_steps == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    assert later.train_loss[2] == 9.0 and later.eval_loss == (0.7,)
    row = in_new_thread(source.jobs).jobs[0]
    assert (row.job_id, row.kind, row.state, row.progress) == (job.id, "selftest", "finished", 1.0)


def test_models_come_from_the_registry(deck, tiny_model_dir):
    from engine import actions

    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    actions.deploy(deck, actions.DeployRequest("tiny@1", "local"))
    panel = in_new_thread(EngineSource(deck).models)
    assert [row.ref for row in panel.rows] == ["tiny@1"]
    assert panel.rows[0].serving_on == ("local",)
    assert panel.targets[0] == "local"


def test_downsampling_keeps_the_whole_run_within_the_budget():
    steps = [float(step) for step in range(100_000)]
    values = [float(step % 100) for step in range(100_000)]
    drawn_steps, drawn_values = downsample(steps, values, 200)
    assert len(drawn_steps) == len(drawn_values) == 200
    assert drawn_steps[0] == 0.0 and drawn_steps[-1] == 99_999.0  # never truncated
    assert drawn_steps == sorted(drawn_steps)
    assert abs(sum(drawn_values[1:-1]) / 198 - 49.5) < 1.0  # bucket means
    assert downsample(steps[:50], values[:50], 200) == (steps[:50], values[:50])


def test_models_pane_summarises_a_compression_report():
    from types import SimpleNamespace

    from console.sources import model_row

    report = {"verdict": "accepted", "change": {"perplexity_pct": 0.75, "decode_speedup": 2.04,
                                                "size_ratio": 0.256}}
    version = SimpleNamespace(ref="smol@3", model="smol", version=3, size_bytes=1, parent_version=2,
                              status="ready", metrics={"compression": report, "eval_loss": 3.31},
                              aliases=())
    row = model_row(version, ())
    assert row.metrics[:3] == (("Δppl", "+0.8%"), ("speed", "x2.04"), ("size", "x0.26"))
    assert ("eval_loss", "3.31") in row.metrics
    plain = model_row(SimpleNamespace(**{**vars(version), "metrics": {"eval_loss": 3.31}}), ())
    assert plain.metrics == (("eval_loss", "3.31"),)
