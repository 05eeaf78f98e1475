"""Every CLI invocation ends in a defined way: global flags in either position, deck.toml read
by every verb, bad values refused at the boundary (exit 2, one line, nothing written), a closed
pipe ending quietly, and a last line of defence that never prints a traceback."""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_modeldeck

BAD_TOML = "[serve\nport = 1\n"


def deck_fingerprint(home: Path) -> dict[str, tuple[int, str]]:
    """Every path under the deck home with its size and content hash (directories too)."""
    if not home.exists():
        return {}
    return {str(path.relative_to(home)): ((path.stat().st_size,
                                          hashlib.sha256(path.read_bytes()).hexdigest())
                                         if path.is_file() else (0, "dir"))
            for path in sorted(home.rglob("*"))}


def assert_refused(result, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modeldeck: error: "), result
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def seeded(cli, tiny_model_dir, deck_home):
    assert cli("models", "import", str(tiny_model_dir), "--name", "tiny").code == 0
    assert cli("deploy", "tiny@1", "--yes").code == 0
    return deck_fingerprint(deck_home)


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_TOML)
    return path


# ---- 1. --json and --config before the verb --------------------------------------------------


@pytest.mark.parametrize("verb", [("endpoints", "list"), ("models", "list"), ("status",),
                                  ("history",), ("targets", "list"), ("audit",)])
def test_config_before_the_verb_is_read(cli, deck_home, bad_config, verb):
    assert_refused(cli("--config", str(bad_config), *verb), str(bad_config), "not valid TOML")
    assert_refused(cli(*verb, "--config", str(bad_config)), str(bad_config), "not valid TOML")


def test_json_before_the_verb_is_honoured(cli, deck_home, tmp_path):
    good = tmp_path / "deck.toml"
    good.write_text('[[endpoints]]\nname = "edge"\nkind = "vllm"\nurl = "http://127.0.0.1:9"\n')
    for argv in (("--json", "--config", str(good), "endpoints", "list"),
                 ("endpoints", "--json", "list", "--config", str(good)),
                 ("--config", str(good), "endpoints", "list", "--json")):
        result = cli(*argv)
        assert result.code == 0, (argv, result)
        document = json.loads(result.stdout)
        assert document["kind"] == "endpoints.list", argv
        assert [e["name"] for e in document["endpoints"]] == ["edge"], argv


def test_json_before_finetune_reports_errors_as_json(cli, deck_home, tmp_path):
    result = cli("--json", "finetune", "ghost@1", "--data", str(tmp_path / "missing.jsonl"))
    assert_refused(result, "--data")
    assert json.loads(result.stdout)["error"]["kind"] == "bad-input"


# ---- 2. every verb reads and validates deck.toml --------------------------------------------


READ_VERBS = [("status",), ("models", "list"), ("history",), ("audit",), ("targets", "list"),
              ("jobs", "list"), ("endpoints", "list"), ("watch", "--count", "1", "--local")]


@pytest.mark.parametrize("verb", READ_VERBS)
def test_every_verb_validates_deck_toml(cli, seeded, deck_home, tmp_path, verb):
    (deck_home / "deck.toml").write_text("[serve]\nprot = 80\n")
    assert_refused(cli(*verb), "deck.toml", "serve.prot")
    assert_refused(cli(*verb, "--config", str(tmp_path / "absent.toml")), "absent.toml",
                   "does not exist")
    (deck_home / "deck.toml").unlink()
    assert deck_fingerprint(deck_home) == seeded


def test_status_validates_deck_toml_as_a_script_sees_it(seeded, deck_home):
    (deck_home / "deck.toml").write_text("[telemetry]\ninterval_s = nan\n")
    result = run_modeldeck("status", home=deck_home)
    assert_refused(result, "telemetry.interval_s", "finite")


@pytest.mark.parametrize("content, fragment", [
    ("serve = 5\n", "serve:"), ("[[serve]]\nport = 1\n", "serve:"),
    ('source = "/etc"\n', "source"), ("[finetune]\nlearning_rate = inf\n", "finetune.learning_rate"),
    (b"\xff\xfe[serve]\n", "not UTF-8")])
def test_malformed_config_documents_are_one_line(cli, deck_home, tmp_path, content, fragment):
    path = tmp_path / "deck.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_refused(cli("history", "--config", str(path)), str(path), fragment)


def test_bad_environment_override_names_the_variable(cli, deck_home, monkeypatch):
    monkeypatch.setenv("MODELDECK_SERVE_PORT", "eighty")
    assert_refused(cli("status"), "MODELDECK_SERVE_PORT")


def test_empty_config_name_is_refused(cli, deck_home):
    assert_refused(cli("--config", "", "history"), "--config")


# ---- 3. a closed pipe ends quietly --------------------------------------------------------


def piped_into_head(args: list[str], home: Path) -> tuple[int, str, str]:
    """`modeldeck ARGS | head -1`, with a real pipe: read one line, then close our end."""
    env = {**__import__("os").environ, "MODELDECK_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "console.cli", *args], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline().decode()
    process.stdout.close()
    stderr = process.communicate(timeout=60)[1].decode()
    return process.returncode, first, stderr


def test_watch_into_head_exits_quietly(deck_home, tmp_path):
    readings = REPO / "tests" / "telemetry" / "fixtures" / "gpu-8x-h100.jsonl"
    code, first, stderr = piped_into_head(["watch", "--json", "--interval", "0.05", "--local",
                                           "--gpu-replay", str(readings)], deck_home)
    assert json.loads(first)["kind"] == "watch"
    assert (code, stderr) == (141, ""), stderr


def fake_job(home: Path, job_id: str, events: int) -> Path:
    """A job directory as the engine writes it (spec + events through its own writer), without
    running a worker: `jobs logs` only reads the files."""
    from engine import jobs

    directory = home / "jobs" / job_id
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps({"kind": "finetune", "spec": {}}))
    jobs.append_event(directory, "registered", version="tiny@2", kind="model")
    for step in range(events):
        jobs.append_event(directory, "progress", step=step, max_steps=events, loss=1.0 / (step + 1),
                          learning_rate=float("inf") if step == 0 else 2e-4)
    return directory


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_jobs_logs_into_head_exits_quietly(deck_home, json_flag):
    fake_job(deck_home, "finetune-pipe", 5000)  # far more than a pipe buffer holds
    code, first, stderr = piped_into_head(["jobs", "logs", "finetune-pipe", *json_flag], deck_home)
    assert first
    assert (code, stderr) == (141, ""), stderr


# ---- 4. jobs logs --json: the event is nested ----------------------------------------------


def reject_constant(name: str):
    raise ValueError(f"not JSON: {name}")


def test_jobs_logs_json_nests_the_event(cli, deck_home):
    fake_job(deck_home, "finetune-shape", 2)
    result = cli("jobs", "logs", "finetune-shape", "--json")
    assert result.code == 0, result
    documents = [json.loads(line, parse_constant=reject_constant)
                 for line in result.stdout.splitlines()]
    assert {(d["schema"], d["kind"], d["job"]) for d in documents} == {
        ("modeldeck/v1", "jobs.event", "finetune-shape")}
    assert documents[0]["event"]["type"] == "registered"
    assert documents[0]["event"]["kind"] == "model"  # the event's own kind, kept inside it
    assert documents[1]["event"]["learning_rate"] is None  # Infinity is not JSON: null


def test_jobs_logs_reads_odd_events_without_a_crash(cli, deck_home):
    """Events are the engine's, but a file can be edited or torn: text output copes."""
    from engine import jobs

    directory = fake_job(deck_home, "finetune-odd", 0)
    jobs.append_event(directory, "eval", step=3, eval_loss=None)
    jobs.append_event(directory, "progress", step="x", loss="high", learning_rate=float("nan"))
    jobs.append_event(directory, "state")
    result = cli("jobs", "logs", "finetune-odd")
    assert result.code == 0, result
    assert "eval step 3: loss -" in result.stdout and "loss high" in result.stdout


# ---- 5. every argument judged at the boundary ---------------------------------------------


BAD_ARGUMENTS = [
    (("history", "--limit", "-1"), "--limit"),
    (("history", "--limit", "99999999999999999999999"), "--limit"),
    (("audit", "--limit", "0"), "--limit"),
    (("audit", "--limit", "-5"), "--limit"),
    (("audit", "--limit", "٣"), "--limit"),
    (("watch", "--count", "0"), "--count"),
    (("watch", "--count", "1", "--interval", "0"), "--interval"),
    (("watch", "--count", "1", "--interval", "nan"), "--interval"),
    (("watch", "--count", "1", "--interval", "inf"), "--interval"),
    (("watch", "--count", "1", "--gpu-replay", "/nonexistent"), "--gpu-replay"),
    (("watch", "--count", "1", "--gpu-replay", "/"), "--gpu-replay"),
    (("endpoints", "check", "--window", "nan"), "--window"),
    (("endpoints", "check", "--window", "1e400"), "--window"),
    (("endpoints", "check", "--window", "-1"), "--window"),
    (("finetune", "tiny@1", "--data", "{data}", "--lr", "inf"), "--lr"),
    (("finetune", "tiny@1", "--data", "{data}", "--lr", "nan"), "--lr"),
    (("finetune", "tiny@1", "--data", "{data}", "--lr", "0"), "--lr"),
    (("finetune", "tiny@1", "--data", "{data}", "--steps", "0"), "--steps"),
    (("finetune", "tiny@1", "--data", "{data}", "--batch-size", "0"), "--batch-size"),
    (("finetune", "tiny@1", "--data", "{data}", "--eval-split", "1.5"), "--eval-split"),
    (("finetune", "tiny@1", "--data", "{data}", "--eval-split", "1"), "--eval-split"),
    (("finetune", "tiny@1", "--data", "{data}", "--epochs", "-inf"), "--epochs"),
    (("finetune", "tiny@1", "--data", "{data}", "--seed", "99999999999"), "--seed"),
    (("finetune", "tiny@1", "--data", "{data}", "--device", "tpu"), "--device"),
    (("finetune", "tiny@1", "--data", "{data}", "--device", "cuda"), "--device"),
    (("finetune", "tiny@1", "--data", "{data}", "--nproc", "0"), "--nproc"),
    (("finetune", "tiny@1", "--data", "{data}", "--nnodes", "2", "--node-rank", "2"), "--node-rank"),
    (("finetune", "tiny@1", "--data", "{data}", "--nnodes", "2"), "--rdzv-endpoint"),
    (("finetune", "tiny@1", "--data", "/nonexistent"), "--data"),
    (("finetune", "tiny@1", "--data", "{data}", "--eval-file", "/"), "--eval-file"),
    (("compress", "tiny@1", "--method", "prune", "--sparsity", "2"), "--sparsity"),
    (("compress", "tiny@1", "--method", "prune", "--sparsity", "nan"), "--sparsity"),
    (("compress", "tiny@1", "--method", "distill", "--temperature", "inf"), "--temperature"),
    (("compress", "tiny@1", "--method", "distill", "--steps", "0"), "--steps"),
    (("compress", "tiny@1", "--eval", "/nonexistent"), "--eval"),
    (("jobs", "show", "a\x00b"), "invalid job id"),
    (("jobs", "show", "j" * 300), "invalid job id"),  # was ENAMETOOLONG from the jobs directory
    (("jobs", "logs", "é" * 200), "invalid job id"),
    (("finetune", "tiny@1", "--data", "/dev/null"), "not a regular file"),
    (("models", "show", "x" * 5000), "too long"),
]


@pytest.mark.parametrize("argv, fragment", BAD_ARGUMENTS, ids=lambda value: " ".join(value)[:60]
                         if isinstance(value, tuple) else None)
def test_bad_arguments_are_refused_before_anything_is_written(cli, seeded, deck_home, tmp_path,
                                                              argv, fragment):
    data = tmp_path / "data.txt"
    data.write_text("one paragraph\n\nanother paragraph\n")
    before = deck_fingerprint(deck_home)
    result = cli(*(part.replace("{data}", str(data)) for part in argv))
    assert_refused(result, fragment)
    assert deck_fingerprint(deck_home) == before == seeded


# ---- 6. the last line of defence ------------------------------------------------------------


def test_an_os_error_is_one_line_with_the_reason(cli, deck_home, monkeypatch):
    """A full disk cannot be produced here on demand: the fault is injected into the action."""
    from engine import actions

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(deck_home / "registry.db"))

    monkeypatch.setattr(actions, "history", full_disk)
    result = cli("history")
    assert result.code == 1, result
    assert result.stderr == f"modeldeck: error: {deck_home / 'registry.db'}: No space left on device\n"


def test_a_bug_is_one_line_and_the_traceback_is_on_request(cli, deck_home, monkeypatch):
    from engine import actions

    def broken(*args, **kwargs):
        raise RuntimeError("something impossible\nwith a second line")

    monkeypatch.setattr(actions, "audit", broken)
    result = cli("audit")
    assert result.code == 1 and "Traceback" not in result.stderr, result
    assert result.stderr.count("\n") == 1
    assert "RuntimeError: something impossible" in result.stderr
    assert "MODELDECK_DEBUG=1" in result.stderr
    monkeypatch.setenv("MODELDECK_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli("audit")


def test_a_deck_home_that_is_a_file_is_bad_input(cli, tmp_path, monkeypatch):
    not_a_directory = tmp_path / "home-file"
    not_a_directory.write_text("x")
    monkeypatch.setenv("MODELDECK_HOME", str(not_a_directory))
    assert_refused(cli("status"), "not a directory", "MODELDECK_HOME")
    assert not_a_directory.read_text() == "x"


def test_usage_errors_in_json_mode_are_json(cli, deck_home):
    result = cli("history", "--json", "--limit", "x")
    assert_refused(result, "--limit")
    assert json.loads(result.stdout)["error"]["exit_code"] == 2


# ---- 6. a run imports only its own verb's module -----------------------------------------


def test_each_command_module_registers_the_verbs_the_table_names():
    """console.commands.VERB_MODULES is how a run finds its verb's module without importing the
    others: it must say exactly what each module registers."""
    import importlib

    from console.cli import CleanParser, common_options
    from console.commands import COMMAND_MODULES, VERB_MODULES

    for module_name in COMMAND_MODULES:
        parser = CleanParser(prog="probe")
        verbs = parser.add_subparsers(dest="command", parser_class=CleanParser)
        importlib.import_module(module_name).register(verbs, common_options(suppress=True))
        assert set(verbs.choices) == {verb for verb, module in VERB_MODULES.items()
                                      if module == module_name}, module_name


@pytest.mark.parametrize("argv, verb", [
    (["status"], "status"), (["--json", "status"], "status"), (["--config", "x.toml", "jobs", "list"], "jobs"),
    (["--config=x.toml", "--json", "deploy", "tiny@1"], "deploy"), (["--help"], None),
    (["-h", "status"], None), ([], None), (["--config", "status"], None)])
def test_the_verb_of_a_command_line(argv, verb):
    from console.cli import _verb_of

    assert _verb_of(argv) == verb


def test_a_lazily_built_parser_still_knows_every_verb(cli, deck_home):
    """An unknown verb and the top-level help are answered by the whole parser."""
    from console.commands import VERB_MODULES

    result = cli("statsu")
    assert_refused(result, "invalid choice", "'statsu'", "fleet", "status")
    completed = run_modeldeck("--help", home=deck_home)
    assert completed.code == 0 and all(verb in completed.stdout for verb in VERB_MODULES)
