"""The dependency rules of DESIGN.md, enforced: engine never reaches into the UI, and the
headless status path stays free of torch, transformers and textual."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HEAVY = ("torch", "transformers", "textual", "rich", "peft", "torchao")


def modules_after(code: str, home: Path) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                               text=True, env={**os.environ, "MODELDECK_HOME": str(home)}, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_import_engine_is_light(tmp_path):
    loaded = top_level(modules_after("import engine, engine.actions, engine.registry, engine.deck", tmp_path))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_headless_status_imports_no_torch_or_textual(tmp_path):
    # pydantic is allowed: status validates deck.toml like every verb (a broken one is exit 2).
    # Measured with bench/status.py (2 shared cores, 2026-11-25): median 216 ms with it, 116 ms
    # without; the target is 300 ms.
    code = ("import io, contextlib\nfrom console.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['status', '--json']) == 0")
    loaded = top_level(modules_after(code, tmp_path))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_headless_registry_verbs_import_no_textual(tmp_path):
    code = ("import io, contextlib\nfrom console.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['models', 'list', '--json']) == 0\n"
            "    assert main(['history', '--json']) == 0")
    loaded = top_level(modules_after(code, tmp_path))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_the_ui():
    offenders = {str(path.relative_to(REPO)): sorted(imported_names(path) & {"console", "textual", "rich"})
                 for path in (REPO / "engine").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
