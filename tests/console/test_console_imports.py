"""The console process never imports torch or transformers: it runs the real app headless
against a deck with a real fine-tune job's events and checks sys.modules in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import asyncio, json, sys
from engine.deck import Deck
from console.app import ModeldeckApp

async def main():
    app = ModeldeckApp(Deck(), refresh_s=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(300):
            await pilot.pause(0.02)
            if app.dashboard.data_ready:
                break
        assert app.dashboard.data_ready
        await pilot.press("tab", "tab", "question_mark", "escape", "ctrl+p", "escape")
        await pilot.pause(0.2)
        models = app.dashboard.query_one("#models").panel
        print(json.dumps({"modules": sorted(sys.modules), "rows": len(models.rows)}))

asyncio.run(main())
"""


def test_console_never_imports_torch_or_transformers(deck, tiny_model_dir):
    from engine import actions

    actions.import_model(deck, actions.ImportRequest(tiny_model_dir, "tiny"))
    completed = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                               text=True, timeout=120,
                               env={**os.environ, "MODELDECK_HOME": str(deck.paths.home)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["rows"] == 1  # it really read the registry
    loaded = {name.split(".")[0] for name in report["modules"]}
    assert "textual" in loaded
    assert not loaded & {"torch", "transformers", "peft", "torchao", "accelerate"}, \
        loaded & {"torch", "transformers", "peft", "torchao", "accelerate"}
