"""The engine's layers hold: pyproject's import-linter contracts (engine never imports the UI;
actions -> targets -> {serving, training, compression, telemetry} -> remote -> modelio -> jobs ->
deck -> registry -> config -> the bottom modules), checked with lint-imports on every run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, env=environment,
                               capture_output=True, text=True, timeout=120)
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report[report.find("Broken contracts"):] or report
    assert "BROKEN" not in report and " kept, 0 broken" in report, report
