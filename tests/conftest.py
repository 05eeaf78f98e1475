"""Shared fixtures: an empty deck home per test, a tiny model built once per session, and
helpers to run the CLI in-process or as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing in the tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Deploying to `local` starts a server by default; most tests deploy to check the registry, so
# they move the pointer only. Tests of autostart itself unset this (run_modeldeck env=None).
os.environ["MODELDECK_SERVE_AUTOSTART"] = "false"
# The console discovers engines running on the box; other processes on a shared machine must
# not appear in its panes. The discovery tests switch it back on.
os.environ["MODELDECK_DISCOVERY"] = "off"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def deck_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "deck"
    monkeypatch.setenv("MODELDECK_HOME", str(home))
    monkeypatch.delenv("MODELDECK_CONFIG", raising=False)
    return home


@pytest.fixture
def deck(deck_home: Path):
    from engine.deck import Deck

    opened = Deck.at(deck_home)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) Llama with tokenizer and chat template, in safetensors; built once."""
    from engine.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with different weights, for version-to-version tests."""
    from engine.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models-b") / "tiny-llama", seed=1)


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, stdout={self.stdout[-500:]!r}, stderr={self.stderr[-500:]!r})"


@pytest.fixture
def cli(deck_home: Path, capsys: pytest.CaptureFixture):
    """Run `modeldeck ARGS` in-process against the test's deck home."""
    from console.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_modeldeck(*args: str, home: Path, env: dict | None = None, input: str | None = None,
                  timeout: float = 120) -> CliResult:
    """Run `modeldeck ARGS` as a real subprocess (what a script would do). An env value of
    None removes that variable."""
    full_env = {**os.environ, "MODELDECK_HOME": str(home), **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}
    completed = subprocess.run([sys.executable, "-m", "console.cli", *args], cwd=REPO,
                               env=full_env, input=input, capture_output=True, text=True,
                               timeout=timeout)
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def stop_leftover_server(deck_home: Path) -> None:
    """SIGTERM the server run/server.json names: a failed assertion must not leave one behind."""
    import json
    import os
    import signal

    info_path = deck_home / "run" / "server.json"
    try:
        os.kill(json.loads(info_path.read_text())["pid"], signal.SIGTERM)
    except (OSError, ProcessLookupError, ValueError, KeyError):
        pass  # no file, no such process, or a file being rewritten: nothing to stop


def pytest_collection_finish(session: pytest.Session) -> None:
    """A real vLLM takes minutes to start: when its test is selected, start it now, in the
    background, so that its start overlaps the other tests (tests/targets/vllm_real.py)."""
    from tests.targets.vllm_real import EARLY, TEST_FILE

    if not session.config.option.collectonly and any(
            item.nodeid.split("::")[0].endswith(TEST_FILE) for item in session.items):
        EARLY.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    module = sys.modules.get("tests.targets.vllm_real")
    if module is not None:
        module.EARLY.stop()
