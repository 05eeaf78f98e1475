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


def modules_after(code: str, home: Path, settings_from_env: bool = True) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "MODELDECK_HOME": str(home)}
    if not settings_from_env:  # conftest sets MODELDECK_SERVE_AUTOSTART, an override to validate
        env = {name: value for name, value in env.items()
               if not name.startswith("MODELDECK_") or name == "MODELDECK_HOME"}
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                               text=True, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_import_engine_is_light(tmp_path):
    loaded = top_level(modules_after("import engine, engine.actions, engine.registry, engine.deck", tmp_path))
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


STATUS_RUN = ("import io, contextlib\nfrom console.cli import main\n"
              "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['status', '--json']) == 0")


def test_headless_status_imports_no_torch_or_textual(tmp_path):
    # pydantic is allowed where a deck.toml exists: status validates it like every verb (a
    # broken one is exit 2).
    (tmp_path / "deck.toml").write_text("[serve]\nport = 8123\n")
    loaded = modules_after(STATUS_RUN, tmp_path)
    assert "pydantic" in top_level(loaded)  # the file was validated
    assert not top_level(loaded) & set(HEAVY), top_level(loaded) & set(HEAVY)


def test_status_imports_only_what_it_runs(tmp_path):
    """The start-up that made `modeldeck status` miss its 300 ms (bench/status.py: 553 ms median
    on an AVX2 EPYC, 2026-11-26): every verb's module, every engine action, and pydantic with the
    settings classes to validate a deck.toml that did not exist. Now only status's own."""
    loaded = modules_after(STATUS_RUN, tmp_path, settings_from_env=False)
    assert "pydantic" not in top_level(loaded)  # no deck.toml, no override: nothing to validate
    commands = {name for name in loaded if name.startswith("console.commands.")}
    assert commands <= {"console.commands.status_cmds", "console.commands.arguments"}, commands
    verb_families = {name for name in loaded if name.startswith("engine.actions.")}
    assert verb_families <= {"engine.actions.status_report", "engine.actions.alerts"}, verb_families


def test_engine_actions_lazy_names_are_the_typed_ones():
    """engine.actions imports a verb family on first use; mypy reads the TYPE_CHECKING imports.
    Both lists must name the same things, and each name must resolve to its module's object."""
    import importlib

    from engine import actions

    tree = ast.parse((REPO / "engine" / "actions" / "__init__.py").read_text())
    typed = {(node.module.rsplit(".", 1)[1], alias.name) for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine.actions.")
             for alias in node.names}
    lazy = {(module, name) for module, names in actions._EXPORTS.items() for name in names}
    assert typed == lazy
    assert sorted(actions.__all__) == sorted(name for _, name in lazy)
    for module, name in lazy:
        assert getattr(actions, name) is getattr(importlib.import_module(f"engine.actions.{module}"), name)


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
