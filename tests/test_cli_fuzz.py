"""Property-based fuzzing of every headless verb: generated command lines that mix valid tokens
(a deck holding a tiny model) with junk (huge and unicode numbers, nan/inf, empty and long
strings, path traversal, flags in the wrong place). Whatever comes in, an invocation ends in a
defined way:

- exit 0, 1 or 2; never a traceback, never the last line of defence (an unexpected exception);
- exit 2 is one line on stderr and leaves the deck home byte for byte as it was;
- with --json, every line on stdout is strict JSON (no NaN/Infinity).

Bounded: nothing long-lived starts. finetune and compress always get one bad argument (no job),
serve only runs with --stop, watch and `endpoints check --window` are clamped to short runs,
deploy never gets --wait (conftest turns [serve] autostart off), `tui` is not fuzzed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import REPO

# x 22 verb families: about 480 invocations, 11-50 s on 2 busy cores; raise it for a deeper hunt
EXAMPLES_PER_VERB = int(os.environ.get("MODELDECK_FUZZ_EXAMPLES", "22"))
GPU_READINGS = REPO / "tests" / "telemetry" / "fixtures" / "gpu-8x-h100.jsonl"

JUNK_TOKENS = (
    "", " ", "-1", "0", "-0", "nan", "NaN", "inf", "-inf", "+inf", "1e309", "9" * 40, "-" + "9" * 25,
    "٣", "²", "１２", "0x10", "1_000", "1.5", "x" * 3000, "y" * 300, "../../../etc/passwd", "/", ".", "..",
    "/dev/null", "~", "--json", "--yes", "--config", "-", "--", "-h", "a\nb", "tab\there",
    "tiny@", "@1", "tiny@0", "tiny@-1", "tiny@" + "9" * 25, "tiny@٣", "tiny@²", "tiny@latest", "tiny@@1", "💥", "\u202e", "tiny/../x",
    "local", "ghost@1",
)


def junk() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(JUNK_TOKENS),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=12),
    )


def value(*valid: str) -> st.SearchStrategy[str]:
    """Mostly valid tokens (two in three), often junk."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), junk()) if valid else junk()


class Places:
    """Paths the valid tokens point at, made once per test."""

    def __init__(self, tmp: Path, model_dir: Path) -> None:
        self.model_dir = str(model_dir)
        self.data = tmp / "train.txt"
        self.data.write_text("\n\n".join(f"paragraph {i} about models and decks" for i in range(40)))
        self.good_config = tmp / "good.toml"
        self.good_config.write_text("[telemetry]\ninterval_s = 0.5\n")
        self.bad_config = tmp / "bad.toml"
        self.bad_config.write_text("[serve\n")
        self.directory = tmp
        self.broken_replay = tmp / "broken-readings.json"
        self.broken_replay.write_text('{"devices": [1, {"utilization_pct": "x"}]}')


def options(pairs: dict[str, st.SearchStrategy[str] | None]) -> st.SearchStrategy[list[str]]:
    """A random subset of flags, each with a value (None: a switch), in random order."""
    items = list(pairs.items())

    def render(chosen: list[int]) -> st.SearchStrategy[list[str]]:
        parts = []
        for index in chosen:
            flag, strategy = items[index]
            parts.append(st.just([flag]) if strategy is None
                         else strategy.map(lambda text, flag=flag: [flag, text]))
        return st.tuples(*parts).map(lambda groups: [token for group in groups for token in group])

    indices = st.lists(st.integers(0, len(items) - 1), max_size=min(4, len(items)), unique=True)
    return indices.flatmap(render) if items else st.just([])


def verb_strategies(places: Places) -> dict[str, st.SearchStrategy[list[str]]]:
    ref = value("tiny@1", "tiny", "tiny@latest")
    reason = value("because", "rollout 2")
    target = value("local")
    data = value(str(places.data))
    finetune_flags = {
        "--method": value("lora", "full", "freeze"), "--steps": value("1", "2"),
        "--epochs": value("1", "0.5"), "--lr": value("1e-4"), "--batch-size": value("2"),
        "--eval-split": value("0.1", "0"), "--seed": value("0", "7"), "--device": value("cpu", "auto"),
        "--lora-targets": value("q_proj,v_proj"), "--nproc": value("1"), "--reason": reason,
        "--on-bad-row": value("skip", "error"), "--keep-adapter": None, "--wait": None,
    }
    compress_flags = {
        "--method": value("bf16", "int8", "prune", "distill"), "--sparsity": value("0.3"),
        "--steps": value("1"), "--temperature": value("2"), "--alpha": value("0.5"),
        "--batch-size": value("1"), "--eval": value(str(places.data)), "--keep": value("lm_head"),
        "--structured": value("mlp", "heads"), "--wait": None,
    }
    return {
        "models import": st.tuples(value(places.model_dir), value("tiny", "other"),
                                   options({"--allow-pickle": None, "--name": junk()})).map(
            lambda t: ["models", "import", t[0], "--name", t[1], *t[2]]),
        "models list": st.lists(value("tiny"), max_size=1).map(lambda rest: ["models", "list", *rest]),
        "models show": ref.map(lambda r: ["models", "show", r]),
        "models alias": st.tuples(ref, value("stable", "canary")).map(
            lambda t: ["models", "alias", *t]),
        "deploy": st.tuples(ref, options({"--target": target, "--reason": reason, "--force": None,
                                          "--no-start": None, "--yes": None})).map(
            lambda t: ["deploy", t[0], *t[1]]),
        "rollback": options({"--target": target, "--to": value("1", "stable"), "--reason": reason,
                             "--yes": None}).map(lambda rest: ["rollback", *rest]),
        "history": options({"--target": target, "--limit": value("1", "5")}).map(
            lambda rest: ["history", *rest]),
        "audit": options({"--limit": value("1", "3"), "--verb": value("deploy", "import")}).map(
            lambda rest: ["audit", *rest]),
        "status": st.just(["status"]),
        "targets": st.sampled_from(["list", "check"]).map(lambda action: ["targets", action]),
        "jobs": st.tuples(st.sampled_from(["list", "show", "cancel", "resume", "logs", "stop",
                                           "checkpoint", "register-checkpoint", "metrics"]),
                          value(FINISHED_JOB),
                          options({"--reason": reason, "--follow": None, "--kind": value("finetune"),
                                   "--step": value("1", "2"), "--metric": value("loss", "eval_loss"),
                                   "--around": value("1"), "--window": value("2")})).map(
            lambda t: ["jobs", t[0]] + ([] if t[0] == "list" else [t[1]]) + t[2]),
        "finetune": st.tuples(ref, data, options(finetune_flags), st.sampled_from(ALWAYS_BAD_FINETUNE)).map(
            lambda t: ["finetune", t[0], "--data", t[1], *t[2], *t[3]]),
        "compress": st.tuples(ref, options(compress_flags), st.sampled_from(ALWAYS_BAD_COMPRESS)).map(
            lambda t: ["compress", t[0], *t[1], *t[2]]),
        "watch": options({"--count": value("1", "2"), "--interval": value("0.05"), "--local": None,
                          "--gpu-replay": value(str(GPU_READINGS), str(places.broken_replay))}).map(
            lambda rest: ["watch", *rest]),
        "endpoints": st.tuples(st.sampled_from(["list", "check"]), st.lists(value("edge"), max_size=2),
                               options({"--window": value("0", "0.05")})).map(
            lambda t: ["endpoints", t[0]] + (t[1] + t[2] if t[0] == "check" else [])),
        "serve --stop": options({"--port": value("8471", "0"), "--host": value("127.0.0.1"),
                                 "--device": value("cpu"), "--max-batch-size": value("4")}).map(
            lambda rest: ["serve", "--stop", *rest]),
        "demo": st.just(["demo"]),
        "jobs snapshot": st.tuples(value(FINISHED_JOB), value("1", "2")).map(
            lambda t: ["jobs", "snapshot", t[0], "--step", t[1]]),
        "alerts": options({"--since": value("2h", "2026-01-01T00:00", "10m"), "--rules": None}).map(
            lambda rest: ["alerts", *rest]),
        "monitor --stop": options({"--interval": value("1"), "--count": value("1")}).map(
            lambda rest: ["monitor", "--stop", *rest]),
        "record": st.tuples(value(str(places.directory / "flight.jsonl"), str(places.directory)),
                            options({"--count": value("1"), "--interval": value("0.05"),
                                     "--max-bytes": value("100000"), "--keep": value("2"),
                                     "--local": None, "--gpu-replay": value(str(GPU_READINGS))})).map(
            lambda t: ["record", t[0], *t[1]]),
        "fleet status": options({"--hosts": value("a", "a,b")}).map(
            lambda rest: ["fleet", "status", *rest]),
    }


# Appended last (argparse keeps the last value of a flag), so a finetune or compress never starts:
# each is refused whatever came before it.
ALWAYS_BAD_FINETUNE = (["--lr", "nan"], ["--steps", "0"], ["--batch-size", "-1"], ["--device", "tpu"],
                       ["--eval-split", "1.5"], ["--data", "/nonexistent/train.txt"],
                       ["--seed", "٣"], ["--epochs", "inf"])
ALWAYS_BAD_COMPRESS = (["--sparsity", "2"], ["--temperature", "inf"], ["--steps", "0"],
                       ["--batch-size", "0"], ["--eval", "/nonexistent.txt"], ["--alpha", "nan"])


def with_globals(places: Places, argv: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    """--json and --config before the verb, after it, or not at all."""
    config = st.sampled_from([None, None, None, str(places.good_config), str(places.good_config),
                              str(places.bad_config), str(places.directory),
                              str(places.directory / "absent.toml"), ""])
    flags = st.tuples(st.booleans(), config).map(
        lambda t: (["--json"] if t[0] else []) + (["--config", t[1]] if t[1] is not None else []))
    return st.tuples(argv, flags, st.booleans()).map(
        lambda t: t[1] + t[0] if t[2] else t[0] + t[1])


# ---- keeping it bounded ------------------------------------------------------------------------


def clamp_long_runs(argv: list[str]) -> list[str]:
    """Valid values can ask for long work (`watch --count 10**6`, `endpoints check --window 250`):
    parse as the CLI would, and shorten what would run for long (argparse keeps the last value)."""
    from console.cli import UsageError, build_parser

    try:
        args = build_parser().parse_args(argv)
    except (UsageError, SystemExit):
        return argv  # refused (or --help) before anything runs
    if args.command in ("watch", "record"):
        return [*argv, "--count", "1", "--interval", "0.05"]
    if args.command == "endpoints" and getattr(args, "window", 0) > 0.1:
        return [*argv, "--window", "0"]
    return argv


# ---- the property ----------------------------------------------------------------------------


def deck_fingerprint(home: Path) -> dict[str, tuple[int, str]]:
    return {str(path.relative_to(home)): ((path.stat().st_size,
                                          hashlib.sha256(path.read_bytes()).hexdigest())
                                         if path.is_file() else (0, "dir"))
            for path in sorted(home.rglob("*"))} if home.exists() else {}


def strict_json(line: str) -> None:
    def reject(constant: str):
        raise AssertionError(f"bare {constant} in JSON output")

    json.loads(line, parse_constant=reject)


def check_invocation(cli, home: Path, verb: str, argv: list[str]) -> None:
    before = deck_fingerprint(home)
    jobs_before = sorted(path.name for path in (home / "jobs").iterdir())
    result = cli(*argv)
    assert result.code in (0, 1, 2), (argv, result)
    assert "Traceback" not in result.stderr, (argv, result)
    assert "MODELDECK_DEBUG=1" not in result.stderr, ("the last line of defence fired", argv, result)
    if result.code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, (argv, result)
        assert deck_fingerprint(home) == before, ("exit 2 changed the deck", argv)
    if "--json" in argv and not {"-h", "--help"} & set(argv):
        for line in result.stdout.splitlines():
            strict_json(line)
    if verb in ("finetune", "compress"):
        assert sorted(path.name for path in (home / "jobs").iterdir()) == jobs_before, (
            "a job started", argv)


FINISHED_JOB = "finetune-20260101-000000-abcdef"


def finished_job(home: Path) -> None:
    """A finished job as the engine records one (its own writers), so show/logs/cancel/resume
    reach real code; finished, so nothing can start it again."""
    from engine import jobs

    directory = home / "jobs" / FINISHED_JOB
    directory.mkdir(parents=True)
    (directory / "spec.json").write_text(json.dumps({"id": FINISHED_JOB, "kind": "finetune",
                                                     "created_at": 1.0, "spec": {"parent": "tiny@1"}}))
    jobs.record_state(directory, "queued", "created", attempt=1)
    jobs.append_event(directory, "progress", step=1, max_steps=1, loss=float("nan"))
    jobs.record_state(directory, "finished", "done", result={"version": "tiny@1", "kind": "model"})


@pytest.fixture
def fuzz_deck(cli, deck_home, tiny_model_dir, tmp_path, monkeypatch):
    # `record FILE` with a junk FILE writes it relative to the working directory: a scratch one
    monkeypatch.chdir(tmp_path)
    assert cli("models", "import", str(tiny_model_dir), "--name", "tiny").code == 0
    assert cli("deploy", "tiny@1", "--yes").code == 0
    finished_job(deck_home)
    return Places(tmp_path, tiny_model_dir)


VERBS = ("models import", "models list", "models show", "models alias", "deploy", "rollback",
         "history", "audit", "status", "targets", "jobs", "finetune", "compress", "watch",
         "endpoints", "serve --stop", "demo", "jobs snapshot", "alerts", "monitor --stop", "record",
         "fleet status")


@pytest.mark.parametrize("verb", VERBS)
def test_generated_command_lines_end_in_a_defined_way(cli, deck_home, fuzz_deck, verb):
    strategy = with_globals(fuzz_deck, verb_strategies(fuzz_deck)[verb])

    @settings(max_examples=EXAMPLES_PER_VERB, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(strategy)
    def check(argv: list[str]) -> None:
        check_invocation(cli, deck_home, verb, clamp_long_runs(argv))

    check()
