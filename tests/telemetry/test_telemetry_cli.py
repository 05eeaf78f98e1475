"""`modeldeck watch` and `modeldeck endpoints list|check`, in-process and as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_modeldeck
from tests.prometheus_server import free_port
from tests.telemetry.conftest import recorded
from tests.telemetry.replay_server import Script

SECRET = "sk-cli-secret-5b2f0a"


def write_deck(home: Path, endpoints: list[dict]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    blocks = []
    for entry in endpoints:
        lines = ["[[endpoints]]"] + [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
        blocks.append("\n".join(lines))
    (home / "deck.toml").write_text("\n\n".join(blocks) + "\n")


def test_watch_json_lines_for_scripts(deck_home: Path, gpu_readings: Path):
    result = run_modeldeck("watch", "--json", "--count", "2", "--interval", "0.05",
                           "--gpu-replay", str(gpu_readings), home=deck_home)
    assert result.code == 0, result
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["sequence"] for d in documents] == [1, 2]
    for document in documents:
        assert (document["schema"], document["kind"]) == ("modeldeck/v1", "watch")
        gpus = document["gpus"]
        assert gpus["status"] == "ok" and len(gpus["devices"]) == 8
        assert isinstance(gpus["devices"][0]["utilization_pct"], float)
        assert isinstance(gpus["devices"][0]["memory_used_bytes"], int)
        assert gpus["devices"][7]["power_w"] is None  # unknown is null
        assert document["host"]["cpu_count"] >= 1 and document["endpoints"] == []
    assert documents[0]["host"]["cpu_pct"] is None and isinstance(documents[1]["host"]["cpu_pct"], float)
    assert len(documents[1]["gpus"]["devices"][0]["utilization_history"]) == 2


def test_watch_table_for_people(cli, gpu_readings: Path):
    result = cli("watch", "--count", "1", "--gpu-replay", str(gpu_readings))
    assert result.code == 0, result
    assert "NVIDIA H100 80GB HBM3" in result.stdout and "UTIL" in result.stdout
    assert "host  cpu" in result.stdout


def test_watch_without_a_gpu_says_why(cli):
    result = cli("watch", "--json", "--count", "1")
    assert result.code == 0, result
    gpus = json.loads(result.stdout)["gpus"]
    assert gpus["status"] in ("no-nvml", "no-gpu", "ok")
    if gpus["status"] != "ok":
        assert gpus["devices"] == [] and gpus["reason"]


def test_bad_input_exits_2_with_one_line(cli, deck_home: Path, tmp_path: Path):
    write_deck(deck_home, [{"name": "a", "kind": "vllm", "url": "http://127.0.0.1:9"}])
    for args, fragment in ((("watch", "--count", "0"), "--count"),
                           (("watch", "--interval", "0"), "--interval"),
                           (("watch", "--count", "1", "--gpu-replay", str(tmp_path / "none.jsonl")),
                            "--gpu-replay"),
                           (("endpoints", "check", "nope"), "no endpoint named 'nope'"),
                           (("endpoints", "check", "--window", "-1"), "--window")):
        result = cli(*args)
        assert result.code == 2, (args, result)
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_endpoints_list_shows_where_the_key_comes_from_never_the_key(cli, deck_home: Path, monkeypatch):
    monkeypatch.setenv("CLI_TEST_KEY", SECRET)
    write_deck(deck_home, [{"name": "prod", "kind": "vllm", "url": "https://llm.example:8000/",
                            "api_key_env": "CLI_TEST_KEY", "model": "llama"},
                           {"name": "cpp", "kind": "llamacpp", "url": "http://127.0.0.1:8080"}])
    human, machine = cli("endpoints", "list"), cli("endpoints", "list", "--json")
    assert human.code == machine.code == 0
    assert "env CLI_TEST_KEY" in human.stdout and "https://llm.example:8000" in human.stdout
    endpoints = machine.json["endpoints"]
    assert [e["name"] for e in endpoints] == ["prod", "cpp"]
    assert endpoints[0]["secret_configured"] is True and endpoints[1]["secret_configured"] is False
    assert SECRET not in human.stdout + machine.stdout + human.stderr + machine.stderr


def test_endpoints_check_reports_each_and_exits_1_when_one_is_down(deck_home: Path, replay_server):
    guarded = Script(bodies=[recorded("vllm-0.32-cpu-idle.txt"), recorded("vllm-0.32-cpu-after-16req.txt")],
                     required_key=SECRET)
    write_deck(deck_home, [
        {"name": "vllm-a", "kind": "vllm", "url": replay_server.add("a", guarded),
         "api_key_env": "CLI_TEST_KEY"},
        {"name": "cpp", "kind": "llamacpp",
         "url": replay_server.add("cpp", Script(bodies=[recorded("llamacpp-server-after-8req.txt")]))},
        {"name": "dead", "kind": "tgi", "url": f"http://127.0.0.1:{free_port()}", "timeout_s": 1}])
    env = {"CLI_TEST_KEY": SECRET}
    result = run_modeldeck("endpoints", "check", "--json", "--window", "0.2", home=deck_home, env=env)
    assert result.code == 1, result
    statuses = {e["name"]: (e["status"], e["reason"]) for e in result.json["endpoints"]}
    assert statuses == {"vllm-a": ("up", None), "cpp": ("up", None), "dead": ("down", "refused")}
    vllm = next(e for e in result.json["endpoints"] if e["name"] == "vllm-a")
    assert vllm["tokens_per_s"] > 0 and vllm["ttft_p95_s"] is not None  # two scrapes: rates
    assert SECRET not in result.stdout + result.stderr
    only_up = run_modeldeck("endpoints", "check", "cpp", home=deck_home, env=env)
    assert only_up.code == 0 and "cpp" in only_up.stdout and "dead" not in only_up.stdout


def test_watch_includes_endpoints(deck_home: Path, replay_server, gpu_readings: Path):
    write_deck(deck_home, [{"name": "v", "kind": "vllm", "url": replay_server.add(
        "v", Script(bodies=[recorded("vllm-0.32-cpu-idle.txt"), recorded("vllm-0.32-cpu-after-16req.txt")]))}])
    result = run_modeldeck("watch", "--json", "--count", "2", "--interval", "0.1",
                           "--gpu-replay", str(gpu_readings), home=deck_home)
    assert result.code == 0, result
    last = json.loads(result.stdout.splitlines()[-1])
    (endpoint,) = last["endpoints"]
    assert endpoint["status"] == "up" and endpoint["tokens_per_s"] > 0
    assert last["models"][0]["model"] == "v" and last["models"][0]["replicas_up"] == 1


def test_check_merges_replicas_of_one_model(cli, deck_home: Path, replay_server):
    bodies = [recorded("vllm-0.32-cpu-idle.txt"), recorded("vllm-0.32-cpu-after-16req.txt")]
    write_deck(deck_home, [{"name": f"r{n}", "kind": "vllm", "model": "smol",
                            "url": replay_server.add(f"r{n}", Script(bodies=list(bodies)))}
                           for n in range(2)])
    human = cli("endpoints", "check", "--window", "0.1")
    assert human.code == 0, human
    assert "MODEL" in human.stdout and "smol" in human.stdout and "2/2" in human.stdout


def test_watch_json_reports_slo_attainment_and_goodput(deck_home: Path, replay_server,
                                                       gpu_readings: Path):
    """A real loopback endpoint serving recorded vLLM /metrics (16 requests between the scrapes)."""
    bodies = [recorded("vllm-0.32-cpu-idle.txt"), recorded("vllm-0.32-cpu-after-16req.txt")]
    write_deck(deck_home, [{"name": "v", "kind": "vllm",
                            "url": replay_server.add("v", Script(bodies=bodies))}])
    args = ("watch", "--json", "--count", "2", "--interval", "0.1", "--gpu-replay", str(gpu_readings))
    unset = run_modeldeck(*args, home=deck_home)
    assert unset.code == 0, unset
    assert json.loads(unset.stdout.splitlines()[-1])["endpoints"][0]["slo"] is None  # no [slo]
    write_deck(deck_home, [{"name": "v", "kind": "vllm",  # a fresh script: both bodies again
                            "url": replay_server.add("v2", Script(bodies=bodies))}])
    with (deck_home / "deck.toml").open("a") as deck:
        deck.write("\n[slo]\nttft_s = 1000\ne2e_s = 0.001\n")
    result = run_modeldeck(*args, home=deck_home)
    assert result.code == 0, result
    (endpoint,) = json.loads(result.stdout.splitlines()[-1])["endpoints"]
    slo = endpoint["slo"]
    assert slo["ttft"] == 1.0 and slo["itl"] is None  # every first token within 1000 s
    assert 0.0 <= slo["e2e"] < 0.5  # a CPU server answers few requests within 1 ms
    assert slo["joint"] == slo["ttft"] * slo["e2e"]
    assert slo["goodput_tokens_per_s"] == pytest.approx(endpoint["tokens_per_s"] * slo["joint"])
    assert slo["goodput_requests_per_s"] == pytest.approx(endpoint["requests_per_s"] * slo["joint"])
