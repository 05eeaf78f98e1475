"""The engine-backed source read from worker threads, as the app does: host CPU from any
thread, registry rows, and the loss of a real job's events.jsonl read incrementally."""

from __future__ import annotations

import os
import threading
import time

from console.sources import EngineSource
from console.widgets.loss_pane import downsample
from engine import jobs
from tests.conftest import REPO


def in_new_thread(function):
    box = {}
    worker = threading.Thread(target=lambda: box.update(value=function()))
    worker.start()
    worker.join(30)
    return box["value"]


GPU_READINGS = REPO / "tests" / "telemetry" / "fixtures" / "gpu-8x-h100.jsonl"


def replayed_sampler(deck):
    """build_sampler itself (the console's one reader), with recorded GPUs instead of NVML."""
    from engine.telemetry import build_sampler
    from engine.telemetry.gpu import ReplaySource

    return build_sampler(deck, ReplaySource.from_file(GPU_READINGS), interval_s=0.05)


def test_gpus_and_host_come_from_the_engines_sampler(deck):
    source = EngineSource(deck, sampler=replayed_sampler)
    try:
        first = in_new_thread(source.gpus)
        assert first.status == "ok" and len(first.gpus) == 8  # the first read waits for a tick
        sampler = source._telemetry.sampler
        deadline = time.monotonic() + 10
        while sampler.latest().sequence < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        later = in_new_thread(source.gpus)
        assert later.gpus[0].utilization_history == sampler.history("gpu.0.utilization_pct")[
            -len(later.gpus[0].utilization_history):]
        assert later.host.memory_total_bytes > later.host.memory_used_bytes > 0
        assert later.host.cpu_history == sampler.history("host.cpu_pct")[-len(later.host.cpu_history):]
    finally:
        source.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("modeldeck-sampler")]


def test_the_local_server_row_is_stopped_starting_or_polled(deck, tmp_path):
    from engine.runstate import ServerInfo, start_lock, write_server_info
    from tests.telemetry.replay_server import ReplayServer, Script

    source = EngineSource(deck, sampler=replayed_sampler)
    server = ReplayServer().start()
    try:
        local = lambda: in_new_thread(source.endpoints).endpoints[0]  # noqa: E731
        assert (local().name, local().status) == ("local", "stopped")
        with start_lock(deck.paths.ensure(), timeout=5):  # a start under way: the model loads
            assert local().status == "starting"
        assert local().status == "stopped"
        url = server.add("local", Script(bodies=["vllm:generation_tokens_total 5\n"]))
        write_server_info(deck.paths, ServerInfo(os.getpid(), "127.0.0.1", 1, url, time.time()))
        deadline = time.monotonic() + 10
        seen = [local().status]
        while seen[-1] != "up" and time.monotonic() < deadline:
            time.sleep(0.05)
            seen.append(local().status)
        # announced but not yet polled reads "starting", never "stopped" or "down"
        assert set(seen) <= {"starting", "up"}, seen
        panel = in_new_thread(source.endpoints)
        assert panel.endpoints[0].status == "up" and panel.window_s == 10.0
    finally:
        source.close()
        server.stop()


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
