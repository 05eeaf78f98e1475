"""mypy over engine and console finds nothing (pyproject's [tool.mypy]). The cache lives under
.pytest_cache, so a second local run takes seconds; a cold run (CI) takes about half a minute on two
cores (transformers, peft and ray are read as Any: pyproject's [tool.mypy] says why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors(request, tmp_path_factory):
    # pytest's cache dir when the cache plugin is on; a fresh one (a cold run) when it is off
    cache_plugin = getattr(request.config, "cache", None)
    cache = cache_plugin.mkdir("mypy") if cache_plugin else tmp_path_factory.mktemp("mypy-cache")
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "engine", "console"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=280)
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report
    assert "Success: no issues found" in report, report
