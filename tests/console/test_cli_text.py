"""The CLI's text for people: every human (non-JSON) verb on a realistic deck (a tiny model
imported, a compressed child, a finished compress job, a finished job of the torch-free
self-test) prints designed text through console.present: never a Python repr, an epoch-second
float or `None`; the same names and units as the console (full parent references, one spelling
of the architecture, the compression report as a parent/result/change table).

One deck is built per module (a real compression of the tiny model: about ten seconds), then
each verb runs as a real subprocess against it."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import run_modeldeck

REPR_MARKERS = ("None", "{'", "(0.0,", "[(", "Traceback", "object at 0x")
EPOCH_FLOAT = re.compile(r"\b1[6-9]\d{8}\.\d+")  # time.time() printed as a number


@pytest.fixture(scope="module")
def realistic_deck(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    home = tmp_path_factory.mktemp("cli-text") / "deck"
    assert run_modeldeck("models", "import", str(tiny_model_dir), "--name", "tiny", home=home).code == 0
    compressed = run_modeldeck("compress", "tiny@1", "--method", "bf16", "--decode-tokens", "4",
                               "--wait", home=home, timeout=300)
    assert compressed.code == 0, compressed
    (home / "compress-wait.txt").write_text(compressed.stdout)
    from engine import jobs
    from engine.deck import Deck

    deck = Deck.at(home)
    job = jobs.start_job(deck, "selftest", {"steps": 3})
    deadline = time.monotonic() + 60
    while not jobs.get_job(deck, job.id).terminal and time.monotonic() < deadline:
        time.sleep(0.05)
    deck.close()
    return home


def job_ids(home: Path) -> dict[str, str]:
    listed = run_modeldeck("jobs", "list", "--json", home=home).json["jobs"]
    return {job["kind"]: job["id"] for job in listed}


def assert_designed(text: str, verb: str) -> None:
    found = [marker for marker in REPR_MARKERS if marker in text]
    assert not found, f"`{verb}` printed {found}:\n{text}"
    assert not EPOCH_FLOAT.search(text), f"`{verb}` printed an epoch-second float:\n{text}"


def test_every_human_verb_prints_designed_text(realistic_deck: Path):
    ids = job_ids(realistic_deck)
    verbs = [("models", "list"), ("models", "show", "tiny@1"), ("models", "show", "tiny@2"),
             ("jobs", "list"), ("jobs", "show", ids["compress"]), ("jobs", "show", ids["selftest"]),
             ("jobs", "logs", ids["selftest"]), ("status",), ("targets", "list"),
             ("endpoints", "list"), ("history",), ("audit",)]
    outputs = {"compress --wait": (realistic_deck / "compress-wait.txt").read_text()}
    for verb in verbs:
        result = run_modeldeck(*verb, home=realistic_deck)
        if result.code == 2 and "invalid choice" in result.stderr:
            continue  # a verb this build spells otherwise: the rest still count
        assert result.code == 0, (verb, result)
        outputs[" ".join(verb)] = result.stdout
    for verb, text in outputs.items():
        assert_designed(text, verb)
    assert len(outputs) >= 8


def test_models_and_jobs_read_as_the_console_writes_them(realistic_deck: Path):
    listed = run_modeldeck("models", "list", home=realistic_deck).stdout
    child = next(line for line in listed.splitlines() if line.startswith("tiny@2"))
    assert " tiny@1 " in child and " llama " in child, listed  # full parent ref, one spelling
    assert "LlamaForCausalLM" not in listed
    jobs = run_modeldeck("jobs", "list", home=realistic_deck).stdout
    compress_row = next(line for line in jobs.splitlines() if " compress " in line)
    assert " tiny@1 " in compress_row, jobs  # a compress job shows what it started from
    shown = run_modeldeck("models", "show", "tiny@2", home=realistic_deck).stdout
    report = shown.split("compression report (bf16)")[1]
    header = report.splitlines()[1].split()
    assert header == ["parent", "result", "change"], shown
    assert re.search(r"size on disk\s+\S+ [kMG]B\s+\S+ [kMG]B\s+x0\.\d\d", report), shown
    assert "parent" in shown and "tiny@1" in shown.split("\nversion\n")[1], shown
    waited = (realistic_deck / "compress-wait.txt").read_text()
    assert "compression report (bf16)" in waited and "verdict:" in waited, waited
    compress_job = run_modeldeck("jobs", "show", job_ids(realistic_deck)["compress"],
                                 home=realistic_deck).stdout
    assert "compression report (bf16)" in compress_job and "from" in compress_job, compress_job


def test_gpu_memory_is_in_binary_units(tmp_path: Path):
    readings = Path(__file__).resolve().parents[1] / "telemetry" / "fixtures" / "gpu-8x-h100.jsonl"
    shutil.copy(readings, tmp_path / "gpus.jsonl")
    watched = run_modeldeck("watch", "--count", "1", "--gpu-replay", str(tmp_path / "gpus.jsonl"),
                            home=tmp_path / "deck")
    assert watched.code == 0, watched
    memory = [line for line in watched.stdout.splitlines() if "GiB" in line]
    assert len(memory) == 9 and " GB " not in watched.stdout, watched.stdout  # host + 8 GPUs
    assert_designed(watched.stdout, "watch")
